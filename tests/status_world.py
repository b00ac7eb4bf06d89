"""A setup whose status page has something in every section, made by the
real jobs: backups of prod spread over 40 days (their manifests' start times
moved back: retention reads only those) with a verify and a restore drill;
two real content syncs dev → prod, the second meeting a conflict; the
calendar schema with a push channel about to expire and a failed row."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import psycopg
import pytest

from safesync.functions import cli
from safesync.functions.backup import create_backup, latest_backup
from safesync.functions.calendar.schema import migrate
from safesync.functions.content_sync import content_sync

TOML = """
[backup]
databases = ["prod"]
compress_level = 1

[content_sync]
source = "dev"
target = "prod"
tables = ["courses"]
protected = ["users"]
on_conflict = "source"

[calendar]
database = "prod"
calendar_ids = ["primary"]
"""


def _run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _move_back(settings, info, days: int) -> None:
    manifest = dict(info.manifest)
    at = datetime.now(timezone.utc) - timedelta(days=days)
    manifest["started_at"], manifest["finished_at"] = at.isoformat(), (at + timedelta(minutes=1)).isoformat()
    settings.storage.put_json(info.manifest_key, manifest)


@pytest.fixture
def status_world(make_db, write_settings):
    dev, prod = make_db(), make_db()
    schema = "create table courses (id int primary key, title text not null)"
    _run(dev, schema, "insert into courses select g, 'course ' || g from generate_series(1, 30) g")
    _run(prod, schema, "insert into courses select g, 'course ' || g from generate_series(1, 20) g",
         "create table users (id int primary key, email text)", "insert into users select g, 'u' || g || '@example.test' from generate_series(1, 50) g")
    settings = write_settings({"dev": dev, "prod": prod}, TOML)

    old = create_backup(settings, "prod", "daily")
    _run(prod, "insert into users select g, 'u' || g || '@example.test' from generate_series(51, 3000) g")
    week = create_backup(settings, "prod", "predeploy", trigger={"deployment": "dpl_test"})
    _move_back(settings, old, 40)
    _move_back(settings, week, 8)

    assert content_sync(settings, "sync", adopt=True).body["status"] == "ok"
    _run(prod, "update courses set title = 'edited in prod' where id = 1")
    _run(dev, "update courses set title = 'edited in dev' where id = 1", "insert into courses values (31, 'brand new')")
    second = content_sync(settings, "sync").body
    assert second["status"] == "ok", second["summary"]

    _run(prod, "insert into users select g, 'u' || g || '@example.test' from generate_series(3001, 9000) g")
    assert cli.main(["backup", "create", "--db", "prod", "--json"]) == 0  # runs the jobs stores reports of
    latest = latest_backup(settings, "prod")
    assert cli.main(["backup", "verify", latest.id, "--restore-drill", "--json"]) == 0

    with psycopg.connect(prod, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            "insert into calendar.channels (id, calendar_id, resource_id, token_sha256, address, expiration)"
            " values ('chan-1', 'primary', 'res-1', 'x', 'https://example.test/calendar_notify', now() + interval '3 hours')"
        )
    return SimpleNamespace(settings=settings, dev=dev, prod=prod, latest=latest, sync=second)
