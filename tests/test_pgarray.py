"""``pgarray.array``: the array literal must be the very array psycopg
would have sent for the list — checked by PostgreSQL itself, on every kind
of element a sync passes and on text built to break unquoted syntax."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safesync.shared import pgarray

TRICKY = ["NULL", "null", "", " 1", "1 ", "a,b", "{1}", '"', "\\", "1\t2", "é", "1e5", "-", "+1.5", "::", "deadbeef"]
# PostgreSQL text cannot hold NUL (0x00): no key, hash or ledger value a sync
# passes can contain one, so neither may a drawn element.
PG_TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
ELEMENTS = st.one_of(
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.none()),
    st.lists(st.booleans() | st.none()),
    st.lists(st.uuids() | st.none()),
    st.lists(st.sampled_from(TRICKY) | st.text(alphabet="0123456789abcdefABCDEF.:+-,NUL \"\\{}", max_size=6)),
    st.lists(st.integers() | st.booleans() | st.text(PG_TEXT, max_size=3)),  # mixed: passed to psycopg as the list
)


def _type(values: list) -> str:
    kinds = {type(v) for v in values} - {type(None)}
    if kinds == {bool}:
        return "boolean"
    if kinds == {uuid.UUID}:
        return "uuid"
    if kinds == {int} and all(v is None or -(2**63) <= v < 2**63 for v in values):
        return "bigint"
    return "text"


@pytest.fixture(scope="module")
def conn(pg_server):
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as c:
        yield c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=ELEMENTS)
def test_literal_is_the_array_psycopg_sends(conn, values):
    if _type(values) == "text":
        values = [v if v is None else str(v) for v in values]
    kind = _type(values)
    query = f"select %s::{kind}[] is not distinct from %s::{kind}[], cardinality(%s::{kind}[])"
    same, n = conn.execute(query, [pgarray.array(values), values, pgarray.array(values)]).fetchone()
    assert same and n == len(values), (values, pgarray.array(values))


def test_plain_elements_become_one_string_the_rest_stay_lists():
    assert pgarray.array([1, None, -3]) == "{1,NULL,-3}"
    assert pgarray.array([True, False, None]) == "{t,f,NULL}"
    assert pgarray.array(["12", "ab-c"]) == "{12,ab-c}"
    assert pgarray.array([]) == "{}"
    for needs_quoting in (["NULL"], [""], ["a,b"], ["1 "], ["x"], [1, True], ["1", None]):
        assert pgarray.array(needs_quoting) == list(needs_quoting)


def test_columns_are_one_array_per_key_column():
    keys = [("1", "a"), ("2", "b")]
    assert pgarray.columns(keys, 2) == ["{1,2}", "{a,b}"]
    assert pgarray.columns(keys, 1) == ["{1,2}"]
