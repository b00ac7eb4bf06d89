"""Database passwords that break their URL (an unencoded ``%``, ``@``, ``:``,
``/``, quotes, non-ASCII) never leave the process, in any spelling or piece:
not in the CLI's JSON error or its log line, not in the HTTP 400/503 bodies
of backup and content_sync, not in doctor's checklist, its log line or its
stored ``runs/doctor/*.json``, not in ``GET /status`` — on a real
``safesync serve`` and the real CLI, against the real PostgreSQL (libpq
writes the errors). The session-end scan (tests/conftest.py) then reads every
log and stored file for the same needles. A role whose password holds all of
those characters, with a correctly encoded URL, runs a backup end to end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from safesync.shared import redaction
from tests import sentinels
from tests.live_server import LiveServer

BEARER = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}", "Content-Type": "application/json"}
NAMES = list(sentinels.HOSTILE_DB_PASSWORDS)
TOML = """
[backup]
databases = ["prod"]
compress_level = 1

[content_sync]
source = "dev"
target = "prod"
tables = ["courses"]
"""


def needles_of(password: str) -> list[str]:
    pieces = [p for p in re.split("[" + re.escape(sentinels.DELIMITERS) + "]+", password) if len(p) >= 5]
    return [password, quote(password, safe=""), json.dumps(password)[1:-1], json.dumps(password, ensure_ascii=False)[1:-1], *pieces]


def assert_clean(text: str, password: str, where: str) -> None:
    for needle in needles_of(password):
        assert needle not in text, f"{where} leaks {needle!r}: {text[:600]}"


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safesync.functions.cli", *argv], capture_output=True, text=True,
                          env={**env, "PYTHONDONTWRITEBYTECODE": "1", "SAFESYNC_LOG_LEVEL": "INFO"}, timeout=120)


@pytest.fixture
def hostile_env(pg_server, make_db, write_settings, tmp_path):
    """prod's URL carries the hostile password unencoded; dev is fine."""
    def make(password: str):
        dev = make_db()
        prod = make_db()
        host, port = pg_server.info.get("host", "127.0.0.1"), pg_server.info.get("port", "5432")
        bad = f"postgresql://safesync_test:{password}@{host}:{port}/{prod.rsplit('/', 1)[1]}"
        settings = write_settings({"dev": dev, "prod": bad}, TOML)
        return settings
    return make


@pytest.mark.parametrize("name", NAMES)
def test_a_malformed_url_never_shows_its_password(hostile_env, name: str) -> None:
    password = sentinels.HOSTILE_DB_PASSWORDS[name]
    settings = hostile_env(password)
    env = dict(os.environ)

    # the CLI: JSON error, human error line, doctor (checklist + its log line)
    printed = {}
    for argv in (["backup", "create", "--db", "prod", "--json"], ["backup", "create", "--db", "prod"],
                 ["content", "dry-run", "--json"], ["doctor", "--json"], ["doctor"], ["status", "--json"]):
        result = printed[" ".join(argv)] = cli(*argv, env=env)
        # (the embedded server trusts loopback: a URL libpq can read still connects)
        assert result.returncode in (0, 1, 2), (argv, result.returncode, result.stderr[-800:])
        assert "Traceback" not in result.stderr
        assert_clean(result.stdout + result.stderr, password, f"safesync {' '.join(argv)}")
    doctor = json.loads(printed["doctor --json"].stdout)
    assert [c for c in doctor["tables"]["checks"] if c["name"] == "prod"], doctor["tables"]["checks"]

    # stored runs (doctor's among them), as files
    runs = list(Path(settings.resolve_path("backups")).rglob("*.json"))
    assert any("/runs/doctor/" in str(p) for p in runs), runs
    for path in runs:
        assert_clean(path.read_text(encoding="utf-8"), password, str(path))

    # the real server: HTTP bodies of backup and content_sync, GET /status, its log
    with LiveServer(env=dict(os.environ)) as server:
        for target, body in (("backup", {"action": "create", "db": "prod"}), ("content_sync", {"mode": "dry-run"}),
                             ("validate", {"db": "prod"})):
            reply = server.post(target, json.dumps(body).encode(), BEARER)
            assert reply.status in (200, 400, 503), (target, reply.status, reply.text[:400])
            assert reply.status == 200 or reply.json()["error"], reply.text[:400]
            assert_clean(reply.text, password, f"POST /{target}")
        status = server.request("GET", "/status", headers=BEARER)
        assert status.status == 200, status.text[:400]
        assert_clean(status.text, password, "GET /status")
        assert "doctor" in status.text
    assert_clean(server.log_text(), password, "the server's log")


def test_the_issue_case_names_the_problem_without_the_password(hostile_env) -> None:
    """``Sup3r%Secret_77`` unencoded: libpq says ``invalid percent-encoded
    token``; the user still learns that, and which database."""
    hostile_env(sentinels.HOSTILE_DB_PASSWORDS["percent"])
    result = cli("backup", "create", "--db", "prod", "--json", env=dict(os.environ))
    error = json.loads(result.stdout)["error"]
    assert "invalid percent-encoded token" in error and "Sup3r" not in error and "Secret_77" not in error


@pytest.fixture
def hostile_role(pg_server):
    password = sentinels.HOSTILE_DB_PASSWORDS["everything"]
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists safesync_hostile"))
        conn.execute(sql.SQL("create role safesync_hostile login superuser password {}").format(sql.Literal(password)))
    yield password
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute("drop role if exists safesync_hostile")


def test_an_encoded_hostile_password_works_and_never_shows(pg_server, make_db, write_settings, hostile_role) -> None:
    prod = make_db()
    host, port = pg_server.info.get("host", "127.0.0.1"), pg_server.info.get("port", "5432")
    url = f"postgresql://safesync_hostile:{quote(hostile_role, safe='')}@{host}:{port}/{prod.rsplit('/', 1)[1]}"
    with psycopg.connect(prod) as conn:  # owned by the suite's role: the hostile one owns nothing
        conn.execute("create table t (id int primary key)")
        conn.execute("insert into t values (1), (2)")
    with psycopg.connect(url) as conn:  # the encoded URL connects with the hostile password
        assert conn.execute("select current_user").fetchone()[0] == "safesync_hostile"
    settings = write_settings({"prod": url, "dev": make_db()}, '[backup]\ndatabases = ["prod"]\ncompress_level = 1\n')
    result = cli("backup", "create", "--db", "prod", "--json", env=dict(os.environ))
    assert result.returncode == 0, result.stdout[-800:] + result.stderr[-800:]
    assert_clean(result.stdout + result.stderr, hostile_role, "backup create")
    doctor = cli("doctor", "--json", env=dict(os.environ))
    assert_clean(doctor.stdout + doctor.stderr, hostile_role, "doctor")
    for path in Path(settings.resolve_path("backups")).rglob("*.json"):
        assert_clean(path.read_text(encoding="utf-8"), hostile_role, str(path))


@pytest.mark.parametrize("name", NAMES)
def test_redact_finds_every_spelling_and_piece(monkeypatch, name: str) -> None:
    password = sentinels.HOSTILE_DB_PASSWORDS[name]
    monkeypatch.setenv("SOME_ODD_NAME", f"postgresql://app:{password}@db.internal:5432/prod")  # any variable name
    text = " | ".join([f"token: \"{password}\"", f"host '{password}@db'", repr(password), json.dumps(password),
                       quote(password, safe=""), *needles_of(password)])
    out = redaction.redact(text)
    assert_clean(out, password, "redact")
    shown = redaction.redact(f"cannot reach postgresql://app:{password}@db.internal:5432/prod")
    assert "db.internal:5432/prod" in shown and "postgresql://app:" in shown  # the rest stays readable


def test_tokens_keys_and_google_credentials_are_redacted_whole_and_inside(monkeypatch, tmp_path) -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dV\n-----END PRIVATE KEY-----\n"
    creds = {"type": "service_account", "client_email": "x@y.iam", "private_key_id": "abcdef0123456789", "private_key": key}
    monkeypatch.setenv("SAFESYNC_GOOGLE_CREDENTIALS", json.dumps(creds))
    file = tmp_path / "sa.json"
    file.write_text(json.dumps({**creds, "private_key_id": "fedcba9876543210"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(file))
    text = redaction.redact(f"google said: key abcdef0123456789 / fedcba9876543210 line VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dV")
    for secret in ("abcdef0123456789", "fedcba9876543210", "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dV"):
        assert secret not in text
    for name, value in sentinels.SECRETS.items():
        assert value not in redaction.redact(f"x{value}y"), name  # inside other text too
