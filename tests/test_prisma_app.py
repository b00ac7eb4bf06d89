"""A real Prisma app (Umami's migrations, ``tests/fixtures/prisma_umami``)
deployed on the Supabase cluster and operated as its ``postgres`` user (no
superuser): clone, backup with restore drill, restore, content sync,
validate.
"""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions import migrate
from safesync.functions.backup import create_backup, verify_backup
from safesync.functions.backup.restore import restore_backup
from safesync.functions.content_sync import content_sync
from safesync.functions.staging_clone import clone
from safesync.functions.validate import validate
from safesync.shared.db import connect, database_fingerprint
from tests.fixtures.packed import packed_files
from tests.fixtures import prisma_umami

TOML = """
[backup]
databases = ["prod"]

[content_sync]
source = "dev"
target = "prod"
tables = ["website"]

[staging_clone]
source = "dev"
target = "staging"
schemas = ["public"]

[validate]
database = "prod"
schemas = ["public"]
"""


@pytest.fixture
def app(supabase, write_settings):
    urls = {name: supabase.create_database(empty=True) for name in ("dev", "prod", "staging")}
    for url in urls.values():
        prisma_umami.migrate(url)
    return write_settings(urls, TOML), urls


def test_prisma_app_as_postgres_clone_backup_restore_sync_validate(app):
    settings, urls = app
    with psycopg.connect(urls["dev"], autocommit=True) as conn:
        conn.execute("update website set name = name || ' (renamed)' where name in ('Site 1', 'Site 2')")
        conn.execute(
            "insert into website (website_id, name, domain, created_at) values "
            "('20000000-0000-4000-8000-000000000099', 'New site', 'new.example.com', '2024-05-01')"
        )
    with psycopg.connect(urls["staging"], autocommit=True) as conn:
        conn.execute('delete from session where created_at > \'2024-03-01 02:00\'')

    for _ in range(2):
        cloned = clone(settings)
        assert cloned.exit_code == 0 and cloned.body["details"]["identical"], cloned.body.get("error") or cloned.body["summary"]

    synced = content_sync(settings, "sync", adopt=True)
    assert synced.status == 200, synced.body.get("summary")
    with connect(urls["dev"]) as a, connect(urls["prod"]) as b:
        assert database_fingerprint(a, ["public"])["public.website"] == database_fingerprint(b, ["public"])["public.website"]

    info = create_backup(settings, "prod", "manual")
    verified = verify_backup(settings, info.id, restore_drill_too=True)
    assert verified.ok and verified.drill["owners_kept"] and verified.drill["not_restored"] == [], verified.all_problems

    restored = restore_backup(settings, info.id, "staging")
    assert all(row["match"] for row in restored.tables)
    with connect(urls["prod"]) as a, connect(urls["staging"]) as b:
        assert database_fingerprint(a, ["public"]) == database_fingerprint(b, ["public"])

    checked = validate(settings, "prod").body
    assert checked["status"] == "ok", checked["tables"]["failures"]


def test_a_first_sync_as_postgres_hashes_the_target_once(app, monkeypatch):
    """Staging the target's row hashes (a temporary table) works as the
    hosted, non-superuser ``postgres`` user, on a uuid key; the seeded
    ledger matches the table (the next sync finds nothing to do)."""
    from safesync.functions.content_sync import seed

    monkeypatch.setattr(seed, "worth_it", lambda rows, others: True)  # the fixture's table is small
    settings, urls = app
    with psycopg.connect(urls["dev"], autocommit=True) as conn:
        conn.execute("update website set name = name || ' (renamed)' where name = 'Site 1'")
    synced = content_sync(settings, "sync", adopt=True)
    assert synced.status == 200, synced.body.get("summary")
    assert synced.body["details"]["compare"]["website"]["target_hashed_once"]
    assert synced.body["details"]["ledger"]["website"]["reseeded"] > 0 and synced.body["details"]["protection_proof"]["ok"]
    again = content_sync(settings, "sync")
    assert again.status == 200 and "already in sync" in again.body["summary"], again.body.get("summary")


# Umami's data as it stood at migration 08 (the schema before
# 09_update_hostname_region, whose own SQL moves session.hostname to
# website_event, renames subdivision1 and drops subdivision2 and hostname).
SEED_AT_08 = """
insert into website (website_id, name, domain, created_at)
select ('20000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'Site ' || i, 'site' || i || '.example.com', '2024-02-01'
from generate_series(1, 3) i;
insert into session (session_id, website_id, hostname, browser, country, subdivision1, subdivision2, created_at)
select ('30000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, ('20000000-0000-4000-8000-' || lpad((1 + i % 3)::text, 12, '0'))::uuid,
       'site' || (1 + i % 3) || '.example.com', 'firefox', 'DE', 'DE-BE', case when i % 2 = 0 then 'X' end, '2024-03-01'
from generate_series(1, 20) i;
insert into website_event (event_id, website_id, session_id, visit_id, url_path, event_type, created_at)
select gen_random_uuid(), s.website_id, s.session_id, gen_random_uuid(), '/', 1, s.created_at from session s;
"""


def test_upgrading_umami_through_safesync_migrate_names_each_column_it_drops(supabase, write_settings, tmp_path):
    """Umami's own upgrade (migrations 09–19) on a database with users'
    data, as the hosted ``postgres`` user: the rehearsal names exactly the
    session columns Umami's SQL drops or renames, with their value counts,
    and passes once they are accepted; then apply migrates production."""
    files = list(packed_files(prisma_umami.HERE / "migrations.sql"))
    first_upgrade = next(i for i, (name, _) in enumerate(files) if "09_update_hostname_region" in name)
    prod, scratch = supabase.create_database(empty=True), supabase.create_database(empty=True)
    with psycopg.connect(prod, autocommit=True) as conn:
        for _, text in files[:first_upgrade]:
            conn.execute(text)
        conn.execute(SEED_AT_08)
    (tmp_path / "migrations").mkdir()
    for name, text in files[first_upgrade:]:  # prisma/migrations/09_x/migration.sql -> 09_x.sql
        (tmp_path / "migrations" / f"{name.split('/')[-2]}.sql").write_text(text)
    toml = '[backup]\ndatabases = ["prod"]\n[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n'

    refused = migrate.rehearse(write_settings({"prod": prod, "scratch": scratch}, toml))
    lost = {r["object"]: r["loss"] for r in refused.body["tables"]["existing data lost"]}
    assert refused.exit_code == 1 and lost == {
        "public.session.hostname": "column dropped with 20 value(s)",
        "public.session.subdivision1": "column dropped with 20 value(s)",  # renamed to region: the old name is gone
        "public.session.subdivision2": "column dropped with 10 value(s)",
    }, refused.body["summary"]

    accepted = toml + 'allow_data_loss = ["session.hostname", "session.subdivision1", "session.subdivision2"]\n'
    settings = write_settings({"prod": prod, "scratch": scratch}, accepted)
    rehearsal = migrate.rehearse(settings)
    assert rehearsal.exit_code == 0, rehearsal.body["summary"]
    applied = migrate.apply(settings)
    assert applied.exit_code == 0, applied.body["summary"]
    with psycopg.connect(prod) as conn:  # the data Umami's SQL moved is where it moved it
        assert conn.execute("select count(*) from website_event where hostname like 'site%.example.com'").fetchone()[0] == 20
        assert conn.execute("select count(*) from session where region = 'DE-BE'").fetchone()[0] == 20
