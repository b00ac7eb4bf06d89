"""A real Prisma app (Umami's migrations, ``tests/fixtures/prisma_umami``)
deployed on the Supabase cluster and operated as its ``postgres`` user (no
superuser): clone, backup with restore drill, restore, content sync,
validate.
"""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions.backup import create_backup, verify_backup
from safesync.functions.backup.restore import restore_backup
from safesync.functions.content_sync import content_sync
from safesync.functions.staging_clone import clone
from safesync.functions.validate import validate
from safesync.shared.db import connect, database_fingerprint
from tests.fixtures.prisma_umami import migrate

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
        migrate(url)
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
