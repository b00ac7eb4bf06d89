"""The patterns every real app has, on the pagila sample database
(``tests/fixtures/pagila``): BEFORE UPDATE triggers stamping
``last_update``, sequences not owned by their column, foreign keys declared
on partitions, a materialized view, views where tables are expected.
"""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions.content_sync import content_sync
from safesync.functions.staging_clone import clone
from safesync.functions.validate import validate
from safesync.shared.db import connect, database_fingerprint
from safesync.functions.doctor import run_all
from safesync.shared.preflight import FAIL
from tests.fixtures.pagila import pagila_template

CONTENT = ["language", "category", "actor", "film", "film_actor", "film_category"]
SYNC_TOML = f"""
[content_sync]
source = "dev"
target = "prod"
tables = {CONTENT!r}
"""
IGNORE_TOML = "".join(f'\n[content_sync.options.{t}]\nignore_columns = ["last_update"]\n' for t in CONTENT)


def run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="session")
def pagila(pg_server) -> str:
    return pagila_template(pg_server)


@pytest.fixture
def pair(make_db, pagila):
    return make_db(template=pagila), make_db(template=pagila)


def test_content_sync_names_the_trigger_stamped_column_refuses_and_ignore_columns_syncs(pair, write_settings):
    dev, prod = pair
    run(
        dev,
        "update public.film set title = title || ' (restored)' where film_id <= 3",
        "insert into public.film (title, language_id) values ('NEW FILM A', 1), ('NEW FILM B', 2)",
        "insert into public.film_category (film_id, category_id) select film_id, 1 from public.film where title like 'NEW FILM %'",
    )
    with connect(prod) as conn:
        before = database_fingerprint(conn, ["public"])

    refused = content_sync(write_settings({"dev": dev, "prod": prod}, SYNC_TOML), "sync", adopt=True)

    error = refused.body["summary"] if "summary" in refused.body else refused.body["error"]
    assert refused.status == 422 and refused.permanent, refused.body
    assert "column last_update is rewritten by BEFORE UPDATE trigger last_updated (public.last_updated())" in error
    assert 'ignore_columns = ["last_update"]' in error and "[content_sync.options.film]" in error
    assert "fulltext" not in error  # the tsvector trigger derives it from the row: equal after the trigger
    with connect(prod) as conn:
        assert database_fingerprint(conn, ["public"]) == before

    synced = content_sync(write_settings({"dev": dev, "prod": prod}, SYNC_TOML + IGNORE_TOML), "sync", adopt=True)

    assert synced.status == 200, synced.body["summary"]
    moved = {row["sequence"] for row in synced.body["details"]["sequences"]}
    assert "public.film_film_id_seq" in moved  # DEFAULT nextval('film_film_id_seq'), not OWNED BY the column
    with psycopg.connect(prod, autocommit=True) as conn:
        # prod's next insert gets a fresh id instead of a duplicate key
        new_id = conn.execute("insert into public.film (title, language_id) values ('PROD FILM', 1) returning film_id").fetchone()[0]
        assert new_id > conn.execute("select max(film_id) from public.film where title like 'NEW FILM %'").fetchone()[0]
        assert conn.execute("select count(*) from public.film where title like '% (restored)'").fetchone()[0] == 3


VALIDATE_TOML = """
[validate]
database = "prod"
schemas = ["public"]
allow_missing_pk = ["film_actor", "film_category"]
"""


def test_validate_finds_orphans_in_partitions_and_unowned_sequences_behind(pair, write_settings):
    _, prod = pair
    settings = write_settings({"prod": prod}, VALIDATE_TOML)
    clean = validate(settings, "prod").body
    assert clean["status"] == "ok", clean["tables"]["failures"]

    run(
        prod,
        "set session_replication_role = replica; "  # FK triggers off, as a bulk load or a bad migration would
        "insert into public.payment (customer_id, staff_id, rental_id, amount, payment_date) values (9999, 1, 1, 1.00, '2022-03-05')",
        "select setval('public.customer_customer_id_seq', 2)",
    )
    body = validate(settings, "prod").body

    failures = body["tables"]["failures"]
    orphans = [f for f in failures if f["check"] == "foreign key orphans"]
    assert any("payment_p2022_03_customer_id_fkey" in f["object"] for f in orphans), failures
    behind = [f for f in failures if f["check"] == "sequences ahead of data"]
    assert [f["object"] for f in behind] == ["public.customer_customer_id_seq"], failures


def test_clone_of_pagila_twice_is_identical_and_matview_contents_are_compared(pair, write_settings):
    dev, staging = pair
    run(staging, "delete from public.film_actor where actor_id = 1", "refresh materialized view public.rental_by_category")
    settings = write_settings({"dev": dev, "staging": staging}, '[staging_clone]\nsource = "dev"\ntarget = "staging"\nschemas = ["public"]\n')
    for _ in range(2):
        answer = clone(settings)
        assert answer.exit_code == 0 and answer.body["details"]["identical"], answer.body.get("error") or answer.body["tables"]["schema differences"]

    run(staging, "update public.payment set amount = amount + 1 where payment_id < 50", "refresh materialized view public.rental_by_category")
    body = validate(settings, "dev", against="staging").body

    differing = {row["table"] for row in body["tables"]["data differences"]}
    assert {"public.payment", "public.rental_by_category"} <= differing


def test_partitions_and_views_are_named_as_such(pair, write_settings):
    dev, prod = pair
    toml = '[content_sync]\nsource = "dev"\ntarget = "prod"\ntables = ["film", "payment_p2022_01", "film_list"]\n'
    settings = write_settings({"dev": dev, "prod": prod}, toml)

    checks = {(c.area, c.name): c for c in run_all(settings)}

    assert checks[("content sync", "source payment_p2022_01")].status == FAIL
    assert checks[("content sync", "source payment_p2022_01")].detail == "is a partition of public.payment in dev, not a table"
    assert checks[("content sync", "target film_list")].detail == "is a view in prod, not a table"
    answer = content_sync(settings, "compare")
    assert answer.status == 400 and "payment_p2022_01 is a partition of public.payment" in answer.body["error"]


@pytest.mark.parametrize("statements, expected", [
    # pagila's own kinds of change: a new column with a default, a refreshed matview, a new index
    ("alter table film add column subtitle text default '';\nrefresh materialized view rental_by_category;\n"
     "create index film_subtitle on film (subtitle);\n", {}),
    # a month of payments dropped with its partition: its rows are gone from public.payment
    ("alter table payment detach partition payment_p2022_01;\ndrop table payment_p2022_01;\n",
     {"public.payment": "row(s) deleted"}),
    # updates stamped by pagila's last_updated() trigger overwrite existing values
    ("update actor set first_name = upper(first_name) where actor_id <= 3;\n", {"public.actor": "3 row(s) with existing values changed"}),
], ids=["harmless", "partition dropped", "rows overwritten"])
def test_migrate_rehearsal_on_pagila_names_only_real_losses(make_db, pagila, write_settings, statements, expected, tmp_path):
    from safesync.functions import migrate

    prod, scratch = make_db(template=pagila), make_db()
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_change.sql").write_text(statements)
    toml = '[backup]\ndatabases = ["prod"]\n[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n'
    rehearsal = migrate.rehearse(write_settings({"prod": prod, "scratch": scratch}, toml))
    lost = {r["object"]: r["loss"] for r in rehearsal.body["tables"]["existing data lost"]}
    assert lost.keys() == expected.keys(), lost
    assert all(what in lost[name] for name, what in expected.items()), lost
    assert rehearsal.exit_code == (1 if expected else 0), rehearsal.body["summary"]
