"""When the backup role cannot read something, the user is told what and
why — PostgreSQL's own "permission denied for table X" — before anything is
written, not pg_dump's "could not import the requested snapshot" (what is
left once the exporting transaction has failed). On a real ``safesync
serve`` and the CLI, against the real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from tests import sentinels
from tests.fixtures.lms import create_lms
from tests.live_server import LiveServer

ADMIN = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}", "Content-Type": "application/json"}
CREATE = json.dumps({"action": "create", "db": "prod"}).encode()


@pytest.fixture
def limited(pg_server, make_db, write_settings, tmp_path):
    """prod, reached as a role that may read every table but one."""
    url = make_db()
    create_lms(url, variant="prod")
    role = "safesync_partial_reader"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_roles where rolname = %s", [role]).fetchone():
            conn.execute(sql.SQL("create role {} login").format(sql.Identifier(role)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("grant select on all tables in schema public to {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("grant select on all sequences in schema public to {}").format(sql.Identifier(role)))

    def revoke(statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(role)))

    dbname = url.rsplit("/", 1)[1]
    settings = write_settings({"prod": pg_server.url(dbname, user=role, password=sentinels.DB_PASSWORD)},
                              '[backup]\ndatabases = ["prod"]\ncompress_level = 1\n')
    yield settings, revoke
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))


def stored(settings) -> list[str]:
    return [o.key for o in settings.storage.list("prod/")]


@pytest.mark.parametrize("statement, needle", [
    ("revoke select on payments from {}", "permission denied for table public.payments"),
    ("revoke select on sequence courses_id_seq from {}", "permission denied for sequence public.courses_id_seq"),
], ids=["table", "sequence"])
def test_an_unreadable_object_is_named_before_anything_is_written(limited, statement, needle) -> None:
    settings, revoke = limited
    revoke(statement)
    with LiveServer() as server:
        reply = server.post("backup", CREATE, ADMIN)
    assert reply.status == 422, reply.text[:500]
    error = reply.json()["error"]
    assert needle in error and "could not import" not in error and "safesync_partial_reader" in error, error
    assert stored(settings) == []
    result = subprocess.run([sys.executable, "-m", "safesync.functions.cli", "backup", "create", "--db", "prod"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=120)
    assert result.returncode == 1 and needle in result.stdout + result.stderr, result.stdout[-500:] + result.stderr[-500:]


def test_row_level_security_that_would_filter_the_dump_is_named(limited, pg_server) -> None:
    settings, _ = limited
    with psycopg.connect(settings.database_url("prod").replace("safesync_partial_reader", "safesync_test"), autocommit=True) as conn:
        conn.execute("alter table payments enable row level security")
    with LiveServer() as server:
        reply = server.post("backup", CREATE, ADMIN)
    assert reply.status == 422 and "row-level security would filter table public.payments" in reply.json()["error"], reply.text[:500]
    assert stored(settings) == []


def test_a_role_that_reads_everything_backs_up(limited) -> None:
    settings, _ = limited
    with LiveServer() as server:
        reply = server.post("backup", CREATE, ADMIN)
    assert reply.status == 200, reply.text[:500]
    assert any(key.endswith(".json") for key in stored(settings))
