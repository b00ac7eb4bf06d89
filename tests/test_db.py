"""Catalog introspection and fingerprints on a real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safesync.shared.db import ForeignKey, TableRef, columns, connect, database_fingerprint, fk_order, foreign_keys, list_tables, primary_key
from safesync.shared.errors import DatabaseError
from tests import sentinels

SCHEMA = """
create schema shop;
create table public.courses (id serial primary key, title text not null);
create table public.lessons (
    id int generated always as identity primary key,
    course_id int not null references courses on delete restrict,
    title text,
    title_upper text generated always as (upper(title)) stored
);
create table public.progress (
    user_id uuid, lesson_id int references lessons on delete cascade,
    primary key (user_id, lesson_id)
);
create table shop.a (id int primary key, b_id int);
create table shop.b (id int primary key, a_id int references shop.a deferrable initially deferred);
alter table shop.a add foreign key (b_id) references shop.b on delete set null not valid;
create table public.selfref (id int primary key, parent int references selfref);
create table public.nokey (x int);
"""


@pytest.fixture
def db(make_db):
    url = make_db()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    with connect(url) as conn:
        yield conn


def test_catalog(db) -> None:
    tables = list_tables(db)
    assert TableRef("shop", "a") in tables and TableRef("public", "nokey") in tables
    assert list_tables(db, ["shop"]) == [TableRef("shop", "a"), TableRef("shop", "b")]
    cols = {c.name: c for c in columns(db, TableRef("public", "lessons"))}
    assert cols["id"].identity == "a" and cols["title_upper"].generated and not cols["title"].not_null
    assert primary_key(db, TableRef("public", "progress")) == ["user_id", "lesson_id"]
    assert primary_key(db, TableRef("public", "nokey")) == []
    fks = {(str(f.table), f.name): f for f in foreign_keys(db)}
    progress = next(f for (t, _), f in fks.items() if t == "public.progress")
    assert progress.on_delete == "CASCADE" and progress.ref_table == TableRef("public", "lessons")
    not_valid = next(f for (t, _), f in fks.items() if t == "shop.a")
    assert not not_valid.validated and not_valid.on_delete == "SET NULL"


def test_fk_order_parents_first_and_cycles_survive(db) -> None:
    order = fk_order(list_tables(db), foreign_keys(db))
    assert order.index(TableRef("public", "courses")) < order.index(TableRef("public", "lessons"))
    assert order.index(TableRef("public", "lessons")) < order.index(TableRef("public", "progress"))
    assert {TableRef("shop", "a"), TableRef("shop", "b")} <= set(order)
    assert len(order) == len(set(order)) == len(list_tables(db))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30))
def test_fk_order_property(edges: list[tuple[int, int]]) -> None:
    """For any graph: every table exactly once, and a parent comes before its
    child unless both sit in the same cycle."""
    tables = [TableRef("s", f"t{i}") for i in range(10)]
    fks = [ForeignKey(f"fk{n}", tables[c], ("x",), tables[p], ("id",), "NO ACTION", "NO ACTION", True) for n, (c, p) in enumerate(edges)]
    order = fk_order(tables, fks)
    assert sorted(order) == sorted(tables)
    pos = {t: i for i, t in enumerate(order)}
    reach = {t: {t} for t in tables}  # reach[x] = tables reachable from x via child->parent edges
    changed = True
    while changed:
        changed = False
        for fk in fks:
            new = reach[fk.ref_table] - reach[fk.table]
            if new:
                reach[fk.table] |= new
                changed = True
    for fk in fks:
        same_cycle = fk.table in reach[fk.ref_table]
        assert same_cycle or pos[fk.ref_table] < pos[fk.table]


def test_fingerprint_detects_any_change(db) -> None:
    db.execute("insert into courses (title) values ('a'), ('b')")
    before = database_fingerprint(db)
    assert before["public.courses"][0] == 2
    db.execute("update courses set title = 'a ' where title = 'a'")
    after = database_fingerprint(db)
    assert after["public.courses"] != before["public.courses"]
    assert {k: v for k, v in after.items() if k != "public.courses"} == {k: v for k, v in before.items() if k != "public.courses"}


def test_connection_error_hides_password(pg_server) -> None:
    url = pg_server.url("postgres").replace(sentinels.DB_PASSWORD, "wrong-" + sentinels.DB_PASSWORD)
    url = url.rsplit(":", 1)[0] + ":1/postgres"  # a closed port
    with pytest.raises(DatabaseError) as info:
        connect(url, connect_timeout=2)
    assert sentinels.DB_PASSWORD not in info.value.message
