"""validate: every one-database check made to fail, rules that cannot
write, and the two-database diff catching each object kind it compares."""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from safesync.functions import cli
from safesync.functions.validate import compare, validate
from safesync.shared.db import connect, database_fingerprint
from tests.fixtures.supabase import supabase_dev, supabase_staging, supabase_templates  # noqa: F401

BASE_TOML = """
[validate]
database = "prod"
schemas = ["public", "hotels"]
rls_schemas = ["public", "hotels"]
allow_missing_pk = ["property_relationships"]
"""


def run(write_settings, url: str, extra: str = "", base: str = BASE_TOML):
    settings = write_settings({"dev": url, "staging": url, "prod": url}, base + extra)
    return validate(settings)


def failures(answer) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in answer.body["tables"]["failures"]:
        out.setdefault(row["check"], []).append(row)
    return out


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_healthy_database_passes_every_check(write_settings, supabase_dev, capsys):
    answer = run(write_settings, supabase_dev, '\n[[validate.rules]]\nname = "slugs are lowercase"\nsql = "select slug from public.tenant_registry where slug <> lower(slug) and slug like \'%X%\'"\n')
    assert answer.exit_code == 0, answer.body["tables"]["failures"]
    checks = {row["check"]: row for row in answer.body["tables"]["checks"]}
    assert checks["foreign key orphans"]["examined"] == 12 and checks["rules"]["examined"] == 1
    assert {"table": "public.chat_messages", "rows": 120} in answer.body["tables"]["row counts"]
    assert cli.main(["validate", "--db", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


def test_orphans_behind_a_not_valid_fk(write_settings, supabase_dev):
    sql(
        supabase_dev,
        "alter table public.chat_messages drop constraint chat_messages_conversation_id_fkey",
        "insert into public.chat_messages (conversation_id, tenant_id, role, content, created_at) "
        "select gen_random_uuid(), tenant_id, 'user', 'orphan', now() from public.tenant_registry limit 2",
        "alter table public.chat_messages add constraint chat_messages_conversation_id_fkey "
        "foreign key (conversation_id) references public.chat_conversations(id) not valid",
    )
    answer = run(write_settings, supabase_dev)
    assert answer.exit_code == 1 and answer.body["status"] == "problems"
    [finding] = failures(answer)["foreign key orphans"]
    assert "(NOT VALID)" in finding["object"] and finding["problem"].startswith("2 row(s)")
    assert len(finding["sample"]) == 2


def test_orphans_of_a_dropped_fk_via_expected_relations(write_settings, supabase_dev):
    sql(
        supabase_dev,
        "alter table public.property_relationships drop constraint property_relationships_parent_unit_id_fkey",
        "update public.property_relationships set parent_unit_id = '00000000-0000-0000-0000-000000000001' "
        "where ctid = (select min(ctid) from public.property_relationships)",
    )
    relation = """
[[validate.expected_relations]]
table = "property_relationships"
columns = ["parent_unit_id"]
references = "hotels.accommodation_units"
ref_columns = ["id"]
"""
    assert run(write_settings, supabase_dev).exit_code == 0  # no FK left: only the expectation catches it
    answer = run(write_settings, supabase_dev, relation)
    [finding] = failures(answer)["expected relations"]
    assert finding["sample"] == [{"parent_unit_id": "00000000-0000-0000-0000-000000000001"}]


def test_rls_disabled(write_settings, supabase_dev):
    sql(supabase_dev, "alter table hotels.policies disable row level security")
    [finding] = failures(run(write_settings, supabase_dev))["row level security"]
    assert finding["object"] == "hotels.policies" and "has policies" in finding["problem"]


def test_missing_primary_key(write_settings, supabase_dev):
    answer = run(write_settings, supabase_dev, base=BASE_TOML.replace('allow_missing_pk = ["property_relationships"]', ""))
    [finding] = failures(answer)["primary keys"]
    assert finding["object"] == "public.property_relationships"


def test_invalid_index(write_settings, supabase_dev):
    with psycopg.connect(supabase_dev, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("create unique index concurrently chat_role_idx on public.chat_messages (role)")
    [finding] = failures(run(write_settings, supabase_dev))["indexes valid"]
    assert finding["object"] == "public.chat_role_idx" and "INVALID" in finding["problem"]


def test_sequence_behind_its_column(write_settings, supabase_dev):
    sql(supabase_dev, "select setval('public.sire_content_id_seq', 3)")
    [finding] = failures(run(write_settings, supabase_dev))["sequences ahead of data"]
    assert finding["object"] == "public.sire_content_id_seq" and "next value 4" in finding["problem"]


def test_rules_report_offending_rows_and_can_never_write(write_settings, supabase_dev):
    sql(
        supabase_dev,
        "create function public.sneaky() returns int language plpgsql as "
        "$$ begin delete from public.chat_messages; return 1; end $$",
    )
    rules = """
[[validate.rules]]
name = "no premium tenants"
sql = "select slug, subscription_tier from public.tenant_registry where subscription_tier <> 'basic' order by slug"
max_rows = 1

[[validate.rules]]
name = "writes are impossible"
sql = "select public.sneaky()"

[[validate.rules]]
name = "modifying CTE"
sql = "with d as (delete from public.chat_messages returning id) select id from d"

[[validate.rules]]
name = "too slow"
sql = "select 1 from pg_sleep(2)"

[[validate.rules]]
name = "only for staging"
database = "staging"
sql = "select 1"
"""
    with connect(supabase_dev) as conn:
        before = database_fingerprint(conn, ["public"])
    answer = run(write_settings, supabase_dev, rules, base=BASE_TOML.replace('rls_schemas', 'rule_timeout = "300ms"\nrls_schemas'))
    found = {f["object"]: f for f in failures(answer)["rules"]}
    assert set(found) == {"no premium tenants", "writes are impossible", "modifying CTE", "too slow"}
    assert found["no premium tenants"]["problem"] == "more than 1 offending row(s)"
    assert found["no premium tenants"]["sample"] == [{"slug": "hotel-2", "subscription_tier": "premium"}]
    assert "read-only transaction" in found["writes are impossible"]["problem"]
    assert "statement_timeout" in found["too slow"]["problem"]
    with connect(supabase_dev) as conn:
        assert database_fingerprint(conn, ["public"]) == before


# --- two databases -----------------------------------------------------------

CHANGES = {
    "tables": "create table public.extra (id int)",
    "columns": "alter table public.sire_content alter column code type varchar(40)",
    "constraints": "alter table public.chat_messages drop constraint chat_messages_role_check",
    "indexes": "drop index public.sire_content_code_idx",
    "policies": "alter policy sire_read on public.sire_content using (id > 1)",
    "triggers": "alter table public.chat_messages enable trigger chat_messages_touch",
    "functions": "create or replace function hotels.unit_label(u_name text, u_number integer) returns text "
    "language plpgsql immutable as $$ begin return u_name; end $$",
    "views": "create or replace view public.active_units with (security_invoker = true) as select u.id, u.tenant_id, u.name, "
    "u.name as label from hotels.accommodation_units u where u.status = 'active'",
    "types": "alter type public.unit_status add value 'deleted'",
    "sequences": "alter sequence public.invoice_number_seq increment by 5",
    "sequence positions": "select nextval('public.invoice_number_seq')",
    "extensions": "drop extension vector cascade",
    "extension comments": "comment on extension vector is 'changed'",
    "rls": "alter table public.sire_content force row level security",
    "grants": "revoke select on hotels.policies from anon",
    "comments": "comment on column public.chat_messages.content is 'changed'",
    "schemas": "grant create on schema hotels to authenticated",
    "column options": "alter table public.chat_messages alter column content set (n_distinct = 5)",
    "statistics": "create statistics public.chat_st on conversation_id, content from public.chat_messages",
}
EXPECTED_KIND = {"rls": "tables", "extensions": "extensions", "extension comments": "extensions", "grants": "tables", "column options": "columns"}


@pytest.fixture
def dev_pair(make_db, supabase_templates):
    return make_db(template=supabase_templates["dev"]), make_db(template=supabase_templates["dev"])


def test_identical_copies_compare_identical(dev_pair):
    a, b = dev_pair
    with connect(a) as ca, connect(b) as cb:
        result = compare(ca, cb, ["public", "hotels"])
    assert result.identical, (result.schema.rows("a", "b"), result.data.rows("a", "b"))
    assert result.schema.compared["policies"] == (10, 10) and result.schema.compared["functions"] == (4, 4)
    assert len(result.data.tables) == 10  # 9 tables and the materialized view


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_schema_difference_is_found(change, dev_pair):
    a, b = dev_pair
    sql(b, CHANGES[change])
    with connect(a) as ca, connect(b) as cb:
        result = compare(ca, cb, ["public", "hotels"])
    kinds = {d.kind for d in result.schema.differences}
    assert EXPECTED_KIND.get(change, change) in kinds, result.schema.rows("a", "b")
    assert not result.identical


def test_data_diff_names_first_differing_keys(dev_pair):
    a, b = dev_pair
    sql(
        b,
        "update public.chat_messages set content = 'edited' where id in (7, 42)",
        "delete from public.sire_content where id = 3",
        "insert into public.property_relationships select tenant_id, parent_unit_id, child_unit_id, 'copy' "
        "from public.property_relationships limit 1",
    )
    with connect(a) as ca, connect(b) as cb:
        result = compare(ca, cb, ["public", "hotels"])
    assert result.schema.identical and not result.data.identical
    by_table = {t.table: t for t in result.data.differing}
    assert set(by_table) == {"public.chat_messages", "public.sire_content", "public.property_relationships"}
    assert by_table["public.chat_messages"].first_keys == ["differs: (id)=(7)", "differs: (id)=(42)"]
    assert by_table["public.sire_content"].first_keys == ["only in A: (id)=(3)"]
    assert by_table["public.sire_content"].rows_a == by_table["public.sire_content"].rows_b + 1
    [extra] = by_table["public.property_relationships"].first_keys
    assert extra.startswith("only in B: row (") and "copy" in extra


def test_validate_against_cli_and_http(write_settings, dev_pair, capsys):
    a, b = dev_pair
    write_settings({"dev": a, "staging": b, "prod": a}, BASE_TOML)
    assert cli.main(["validate", "--db", "staging", "--against", "dev", "--json"]) == 0
    assert "identical" in json.loads(capsys.readouterr().out)["summary"]
    sql(b, "create publication everything for all tables", "update public.tenant_registry set slug = 'changed' where slug = 'hotel-1'")
    assert cli.main(["validate", "--db", "staging", "--against", "dev", "--json"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["status"] == "problems" and body["details"]["comparison"]["tables_differing"] == 1
    # a publication FOR ALL TABLES covers the compared schemas: it is compared, not just counted
    assert {"kind": "publications", "object": "everything", "change": "only in staging"} in body["tables"]["schema differences"]

    from safesync.functions.serve import create_app

    client = create_app().test_client()
    auth = {"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"}
    response = client.post("/validate", json={"db": "prod", "against": "staging"}, headers=auth)
    assert response.status_code == 200 and response.get_json()["ok"] is False
    assert client.post("/validate", json={"db": "nope"}, headers=auth).status_code == 400
    assert client.post("/validate", json={"db": ""}, headers=auth).status_code == 400  # not the default database
    assert cli.main(["validate", "--db", ""]) == 2 and "unknown database ''" in capsys.readouterr().err
    assert client.post("/validate", json={"database": "prod"}, headers=auth).status_code == 400
    assert client.post("/validate", json={}, headers=auth).get_json()["ok"] is True  # prod = a: healthy


def test_differing_keys_are_named_as_the_server_prints_them(make_db):
    """Keys reach the report as the engine's text tuples; their label must be
    ``row(key)::text`` exactly as PostgreSQL prints it (quoting included)."""
    from safesync.functions.validate.data_diff import _record_text

    values = [("7",), ("a b", "1"), ("", "x,y"), ('say "hi"', "back\\slash"), ("(paren)", "tab\there")]
    with connect(make_db()) as conn:
        for key in values:
            placeholders = ", ".join(["%s::text"] * len(key))
            assert _record_text(key) == conn.execute(f"select row({placeholders})::text", list(key)).fetchone()[0], key


def test_validate_against_sees_an_edit_of_the_row_with_the_largest_uuid_key(make_db, write_settings):
    """Before: the key ranges of a uuid span were sized through a float and
    ended short of the largest key, so an edit of that one row was
    "identical" (and, on Supabase, a deleted row with no key named)."""
    a, b = make_db(), make_db()
    for url in (a, b):
        sql(url, "create table notes (id uuid primary key, body text)",
            "insert into notes select ('00000000-0000-0000-0000-' || lpad(to_hex(g), 12, '0'))::uuid, 'n' from generate_series(1, 30) g",
            "insert into notes values ('fbe6ebf2-5081-4200-a111-9dfdae0a7d68', 'kept')")
    sql(b, "update notes set body = 'edited' where id = 'fbe6ebf2-5081-4200-a111-9dfdae0a7d68'")
    answer = validate(write_settings({"a": a, "b": b}, '[validate]\nschemas = ["public"]\n'), "a", against="b")
    assert answer.body["status"] == "problems", answer.body["summary"]
    [row] = answer.body["tables"]["data differences"]
    assert row["first differing keys"] == "differs: (id)=(fbe6ebf2-5081-4200-a111-9dfdae0a7d68)"


def test_extended_statistics_are_compared_by_name_not_by_oid(make_db, write_settings):
    """A statistics object is no relation: ``oid::regclass`` printed its OID,
    so the same ``create statistics`` on both sides (and every staging
    clone of one) was two differences, "only in" each side."""
    a, b = make_db(), make_db()
    sql(b, "create table filler (id int, n int)", "create statistics filler_st on id, n from filler", "drop table filler")  # other OIDs on b
    for url in (a, b):
        sql(url, "create table items (id int primary key, name text, qty int)", "create statistics items_st (ndistinct) on name, qty from items")
    settings = write_settings({"a": a, "b": b}, '[validate]\nschemas = ["public"]\n')
    answer = validate(settings, "a", against="b")
    assert answer.body["status"] == "ok", answer.body["tables"]["schema differences"]
    sql(b, "drop statistics items_st", "create statistics items_st (dependencies) on name, qty from items")
    [difference] = validate(settings, "a", against="b").body["tables"]["schema differences"]
    assert difference["kind"] == "statistics" and difference["object"] == "public.items_st", difference


def test_a_configured_schema_that_is_not_there_is_an_error_not_a_pass(make_db, write_settings, capsys):
    """Before: ``schemas = ["pubic"]`` checked no table and passed every
    check (exit 0), and two databases lacking it were "identical"."""
    a, b = make_db(), make_db()
    sql(a, "create table items (id int primary key)")
    write_settings({"a": a, "b": b, "prod": a}, '[validate]\nschemas = ["public", "pubic"]\n')
    assert cli.main(["validate", "--db", "a"]) == 2
    assert capsys.readouterr().err.strip().endswith("validate.schemas: schema(s) 'pubic' do not exist in a")
    assert cli.main(["validate", "--db", "a", "--against", "b"]) == 2
    assert "schema(s) 'pubic' exist in neither a nor b" in capsys.readouterr().err
    write_settings({"a": a, "b": b, "prod": a}, '[validate]\nschemas = ["public"]\nrls_schemas = ["pubic"]\n')
    from safesync.functions.serve import create_app

    response = create_app().test_client().post("/validate", json={"db": "a"}, headers={"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"})
    assert response.status_code == 400 and "validate.rls_schemas: schema(s) 'pubic' do not exist in a" in response.get_json()["error"]
    sql(b, "create schema pubic")  # on one side only: a difference the comparison names
    write_settings({"a": a, "b": b, "prod": a}, '[validate]\nschemas = ["public", "pubic"]\n')
    assert cli.main(["validate", "--db", "a", "--against", "b", "--json"]) == 1
    assert {"kind": "schemas", "object": "pubic", "change": "only in b"} in json.loads(capsys.readouterr().out)["tables"]["schema differences"]


@pytest.mark.parametrize(
    "a_sql, b_sql, kind, attribute",
    [
        (["create type pair as (x int, y text)", "create table t of pair"], ["create type pair as (x int, y text)", "create table t (x int, y text)"], "tables", "of_type"),
        (["create sequence s"], ["create unlogged sequence s"], "sequences", "persistence"),
        (["create table t (a text compression pglz)"], ["create table t (a text)"], "columns", "compression"),
        (['create domain d as text collate "C"'], ["create domain d as text"], "types", "collation"),
    ],
)
def test_definitions_differing_in_type_origin_persistence_compression_or_collation_differ(make_db, a_sql, b_sql, kind, attribute):
    """Before: a typed table and a plain one, a logged and an unlogged
    sequence, a column's explicit compression, a domain's collation (which
    orders and compares its values) were all described alike: "identical"."""
    a, b = make_db(), make_db()
    sql(a, *a_sql)
    sql(b, *b_sql)
    with connect(a) as ca, connect(b) as cb:
        result = compare(ca, cb, ["public"])
    assert (kind, attribute) in {(d.kind, d.attribute) for d in result.schema.differences}, result.schema.rows("a", "b")


def test_aggregates_are_compared_by_their_definition(make_db):
    """Before: an aggregate was described by its placeholder body, so two
    aggregates with other initial values or state functions were "identical"."""
    a, b = make_db(), make_db()
    sql(a, "create aggregate total(int) (sfunc = int4pl, stype = int, initcond = '0')")
    sql(b, "create aggregate total(int) (sfunc = int4pl, stype = int, initcond = '100')")
    with connect(a) as ca, connect(b) as cb:
        [difference] = compare(ca, cb, ["public"]).schema.differences
    assert (difference.kind, difference.name, difference.attribute) == ("functions", "public.total(integer)", "aggregate")
    sql(b, "drop aggregate total(int)", "create aggregate total(int) (sfunc = int4pl, stype = int, initcond = '0')")
    with connect(a) as ca, connect(b) as cb:
        assert compare(ca, cb, ["public"]).schema.identical


def test_a_partition_of_a_parent_outside_the_schemas_is_compared(make_db):
    """Before: tables were listed without their partitions, so a partition
    in a compared schema of a parent in another schema was read by no
    compared table: its rows could differ and the databases were "identical"."""
    a, b = make_db(), make_db()
    for url in (a, b):
        sql(url, "create schema archive", "create table archive.events (id int, v text) partition by list (id)",
            "create table public.events_1 partition of archive.events for values in (1) partition by list (v)",
            "create table public.events_1a partition of public.events_1 for values in ('dev', 'edited')",  # read through events_1
            "insert into archive.events values (1, 'dev')")
    sql(b, "update public.events_1 set v = 'edited'")
    with connect(a) as ca, connect(b) as cb:
        data = compare(ca, cb, ["public"]).data
    assert [(t.table, t.status) for t in data.tables] == [("public.events_1", "differs")]


def test_checks_see_a_partition_of_a_parent_outside_the_schemas(make_db, write_settings):
    """Before: the RLS and primary-key checks skipped every partition, so
    one in a checked schema whose parent lives elsewhere (read by no other
    checked table) passed both unexamined."""
    url = make_db()
    sql(url, "create schema archive", "create table archive.events (id int, v text) partition by list (id)",
        "create table public.events_1 partition of archive.events for values in (1)")
    settings = write_settings({"a": url}, '[validate]\nschemas = ["public"]\nrls_schemas = ["public"]\n')
    failures = {(f["check"], f["object"]) for f in validate(settings, "a").body["tables"]["failures"]}
    assert failures == {("row level security", "public.events_1"), ("primary keys", "public.events_1")}


def test_a_rule_sample_of_nan_and_infinite_floats_is_valid_json(make_db, write_settings):
    """Before: a rule's sample carried Python's NaN / Infinity floats, which
    JSON has no numbers for: the HTTP answer held the bare token NaN, which
    a strict client (JavaScript's JSON.parse) rejects."""
    url = make_db()
    sql(url, "create table prices (id int primary key, amount float8)", "insert into prices values (1, 'NaN'), (2, 'Infinity'), (3, '-Infinity')")
    write_settings({"prod": url}, '[validate]\nschemas = ["public"]\nallow_missing_pk = []\n'
                   '[[validate.rules]]\nname = "finite prices"\nsql = "select id, amount from prices where amount in (\'NaN\', \'Infinity\', \'-Infinity\') order by id"\n')
    from safesync.functions.serve import create_app

    response = create_app().test_client().post("/validate", json={"db": "prod"}, headers={"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"})
    body = json.loads(response.get_data(as_text=True), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    [failure] = [f for f in body["tables"]["failures"] if f["check"] == "rules"]
    assert failure["sample"] == [{"id": 1, "amount": "NaN"}, {"id": 2, "amount": "Infinity"}, {"id": 3, "amount": "-Infinity"}]


def test_a_table_with_no_column_in_common_is_not_called_identical(make_db):
    """Before: with no column on both sides, every row hashed alike and a
    table of as many rows was "identical" in the data diff (and left out of
    its report) whatever the values."""
    a, b = make_db(), make_db()
    sql(a, "create table k (id int primary key)", "insert into k values (1)", "create table t (x int)", "insert into t values (1)")
    sql(b, "create table k (code int primary key)", "insert into k values (5)", "create table t (y int)", "insert into t values (1), (2)")
    with connect(a) as ca, connect(b) as cb:
        data = compare(ca, cb, ["public"]).data
    rows = {r["table"]: (r["status"], r["note"].split(":")[0]) for r in data.rows("a", "b")}
    assert rows == {"public.k": ("not compared", "nothing to compare"), "public.t": ("differs", "nothing to compare")}


def test_an_exhausted_or_cycled_sequence_whose_next_insert_fails_is_found(make_db):
    """Before: the next value was taken as last_value + increment, past the
    sequence's end: neither an exhausted sequence (nextval fails) nor a
    cycling one that starts again on a used value (a duplicate key) was found."""
    from safesync.functions.validate import run_checks

    url = make_db()
    sql(url, "create sequence cycling maxvalue 5 cycle", "create table tickets (id int primary key default nextval('cycling'))",
        "insert into tickets select from generate_series(1, 5)",
        "create sequence finite maxvalue 3", "create table seats (id int primary key default nextval('finite'))",
        "insert into seats select from generate_series(1, 3)",
        "create sequence reused maxvalue 5 cycle", "create table slots (id int primary key default nextval('reused'))",
        "insert into slots select from generate_series(1, 5)", "delete from slots where id = 1")  # 1 is free again: fine
    with connect(url) as conn:
        found = {f.name: f.problem for f in run_checks(conn, schemas=["public"]).findings}
    assert found == {
        "public.cycling": "next value 1 (the sequence cycled) is already used in public.tickets.id",
        "public.finite": "sequence is exhausted (its maximum 3 was reached): the next insert into public.seats fails",
    }, found


def test_each_side_is_compared_in_one_snapshot(make_db, write_settings, monkeypatch):
    """Before: read committed, each table was hashed as the database stood
    then. A transaction committed on b between the hashing of ``done`` and of
    ``pending`` (adding a row to each) made both tables match a although b
    never equalled a: "identical" about a state that never existed."""
    from safesync.functions.validate import data_diff as module

    a, b = make_db(), make_db()
    for url in (a, b):
        sql(url, "create table done (id int primary key)", "create table pending (id int primary key)")
    sql(a, "insert into pending values (1)")
    real = module._keyed

    def concurrent_write_before_pending(sides, shape, table, *args):
        if table == "public.pending":
            sql(b, "begin", "insert into pending values (1)", "insert into done values (2)", "commit")
        return real(sides, shape, table, *args)

    monkeypatch.setattr(module, "_keyed", concurrent_write_before_pending)
    answer = validate(write_settings({"a": a, "b": b}, '[validate]\nschemas = ["public"]\n'), "a", against="b")
    assert answer.body["status"] == "problems", answer.body["summary"]
    [row] = answer.body["tables"]["data differences"]
    assert row["table"] == "public.pending", row  # b as it stood when the comparison began


@pytest.mark.parametrize(
    "create, comment, kind",
    [
        ("create publication feed for table public.items", "comment on publication feed is 'b only'", "publications"),
        ("create function public.on_ddl() returns event_trigger language plpgsql as $$ begin end $$; "
         "create event trigger on_ddl on ddl_command_end execute function public.on_ddl()",
         "comment on event trigger on_ddl is 'b only'", "event triggers"),
    ],
)
def test_comments_on_publications_and_event_triggers_are_compared(make_db, create, comment, kind):
    """Before: only comments on objects inside the schemas were read, so a
    comment on a publication or an event trigger (both compared) was never
    a difference."""
    a, b = make_db(), make_db()
    for url in (a, b):
        sql(url, "create table items (id int primary key)", *create.split("; "))
    sql(b, comment)
    with connect(a) as ca, connect(b) as cb:
        result = compare(ca, cb, ["public"])
    assert [d.kind for d in result.schema.differences] == [kind], result.schema.rows("a", "b")
