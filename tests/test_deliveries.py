"""A delivery is what its credential signed, scoped by target, caller and
body: on a real ``safesync serve`` against the real PostgreSQL.

- one QStash token runs at most one job, however often it arrives and with
  whatever ``Upstash-Message-Id`` (new, missing, another delivery's);
- a message id never fetches another target's or another body's answer;
- QStash's own retries of one message (same id, freshly signed token) replay
  the first answer — and so does each retry's token afterwards — unless that
  answer was a retryable failure (409, 5xx): then the retry runs the job;
- U+0000 in a body, or a malformed QStash id header, is a 400 before
  anything runs (PostgreSQL could not record the delivery);
- bearer callers de-duplicate with ``Idempotency-Key`` (per target, caller
  and body); Vercel events by their signed event id;
- an install's old ``safesync.deliveries`` (keyed by the bare message id) is
  migrated in place, by the job and by the roles script.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import psycopg
import pytest

from safesync.functions.backup import list_backups
from safesync.shared.locks import SCHEMA_SQL, ensure_schema
from tests import sentinels
from tests.fixtures.lms import create_lms
from tests.live_server import LiveServer
from tests.qstash_signer import QStashMessage, qstash_headers, sign

CURRENT = sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"]
NEXT = sentinels.SECRETS["QSTASH_NEXT_SIGNING_KEY"]
API = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}", "Content-Type": "application/json"}
ADMIN = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_ADMIN_TOKEN']}", "Content-Type": "application/json"}
CREATE = json.dumps({"action": "create", "db": "prod"}).encode()
TOML = """
[backup]
databases = ["prod"]
compress_level = 1
prune_after_create = false

[content_sync]
source = "dev"
target = "prod"
tables = ["courses", "lessons"]
"""


def url_of(target: str) -> str:
    return f"{sentinels.PUBLIC_URL}/{target}"


@pytest.fixture
def world(make_db, write_settings):
    dev, prod = make_db(), make_db()
    create_lms(dev, variant="dev")
    create_lms(prod, variant="prod")
    settings = write_settings({"dev": dev, "prod": prod}, TOML)
    with LiveServer() as server:
        yield settings, server


def backups(settings) -> int:
    return len(list_backups(settings, "prod"))


def test_one_token_makes_one_backup_whatever_its_message_id(world) -> None:
    settings, server = world
    token = sign(CURRENT, url_of("backup"), CREATE)
    base = {"Upstash-Signature": token, "Content-Type": "application/json"}
    first = server.post("backup", CREATE, {**base, "Upstash-Message-Id": "msg_first"})
    assert first.status == 200 and "replayed" not in first.json(), first.text[:300]
    for headers in ({**base, "Upstash-Message-Id": "msg_other"}, base, {**base, "Upstash-Message-Id": ""},
                    {**base, "Upstash-Message-Id": "msg_first", "Upstash-Retried": "7"}):
        again = server.post("backup", CREATE, headers)
        assert again.status == 200 and again.json()["replayed"] is True, again.text[:300]
        assert again.json()["details"]["backup"]["id"] == first.json()["details"]["backup"]["id"]
    assert backups(settings) == 1


def test_a_message_id_never_returns_another_targets_answer(world) -> None:
    settings, server = world
    backup = server.post("backup", CREATE, qstash_headers(CURRENT, url_of("backup"), CREATE, message_id="msg_shared"))
    assert backup.status == 200 and backup.json()["job"] == "backup"
    dry_run = json.dumps({"mode": "dry-run"}).encode()
    sync = server.post("content_sync", dry_run, qstash_headers(CURRENT, url_of("content_sync"), dry_run, message_id="msg_shared"))
    assert sync.status in (200, 489), sync.text[:300]  # 489: refused (no ledger yet), permanently, to QStash
    report = sync.json().get("report", sync.json())
    assert report["job"] == "content_sync" and "replayed" not in sync.json(), sync.text[:300]


def test_a_message_id_never_returns_another_bodys_answer(world) -> None:
    settings, server = world
    first = server.post("backup", CREATE, qstash_headers(CURRENT, url_of("backup"), CREATE, message_id="msg_body"))
    other = json.dumps({"action": "create", "db": "prod", "kind": "manual"}).encode()
    second = server.post("backup", other, qstash_headers(CURRENT, url_of("backup"), other, message_id="msg_body"))
    assert first.status == second.status == 200
    assert "replayed" not in second.json() and second.json()["details"]["backup"]["kind"] == "manual"
    assert backups(settings) == 2


def test_qstash_retries_of_one_message_replay_the_first_answer(world) -> None:
    settings, server = world
    message = QStashMessage(CURRENT, url_of("backup"), CREATE, schedule_id="scd_daily")
    first = server.post("backup", CREATE, message.attempt())
    assert first.status == 200
    retry_headers = message.attempt()  # a new token, same message id
    retry = server.post("backup", CREATE, retry_headers)
    assert retry.status == 200 and retry.json()["replayed"] is True
    assert retry.json()["details"]["backup"]["id"] == first.json()["details"]["backup"]["id"]
    # the retry's token, sent again under another message id, is still that delivery
    forged = server.post("backup", CREATE, {**retry_headers, "Upstash-Message-Id": "msg_forged"})
    assert forged.status == 200 and forged.json()["replayed"] is True
    assert backups(settings) == 1


def test_a_retry_after_a_busy_answer_runs_once(world) -> None:
    """The first attempt finds the job running (409, retryable); QStash's
    retry (new token) runs it; the next retry replays it."""
    settings, server = world
    message = QStashMessage(CURRENT, url_of("backup"), CREATE)
    with psycopg.connect(settings.database_url("prod"), autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(hashtextextended('safesync:backup', 0))")
        busy = server.post("backup", CREATE, message.attempt())
        holder.execute("select pg_advisory_unlock(hashtextextended('safesync:backup', 0))")
    assert busy.status == 409, busy.text[:300]
    ran = server.post("backup", CREATE, message.attempt())
    assert ran.status == 200 and "replayed" not in ran.json()
    replayed = server.post("backup", CREATE, message.attempt())
    assert replayed.json()["replayed"] is True and backups(settings) == 1


def test_a_retry_after_a_retryable_failure_runs_again(make_db, write_settings, tmp_path) -> None:
    """The first attempt finds storage unwritable (503, retryable); once it
    is back, QStash's retry — and a re-sent Idempotency-Key — makes the
    backup instead of replaying the 503; the next retry replays that."""
    dev, prod = make_db(), make_db()
    create_lms(dev, variant="dev")
    create_lms(prod, variant="prod")
    blocker = tmp_path / "blocked"  # a file where storage wants a folder: unwritable, even for root
    settings = write_settings({"dev": dev, "prod": prod}, TOML, storage_url=f"file://{blocker}/store")
    keyed = {**API, "Idempotency-Key": "deploy-retry"}
    with LiveServer() as server:
        message = QStashMessage(CURRENT, url_of("backup"), CREATE)
        blocker.write_text("")
        failed = [server.post("backup", CREATE, message.attempt()), server.post("backup", CREATE, keyed)]
        assert [r.status for r in failed] == [503, 503], failed[0].text[:300]
        blocker.unlink()
        for headers in (message.attempt(), keyed):
            ran = server.post("backup", CREATE, headers)
            assert ran.status == 200 and "replayed" not in ran.json(), ran.text[:300]
        replayed = [server.post("backup", CREATE, message.attempt()), server.post("backup", CREATE, keyed)]
        assert all(r.status == 200 and r.json()["replayed"] is True for r in replayed), replayed[0].text[:300]
        assert len(list_backups(settings, "prod")) == 2


def test_idempotency_key_for_bearer_callers(world) -> None:
    settings, server = world
    keyed = {**API, "Idempotency-Key": "deploy-2026-01-01-abc"}
    quoted = {**API, "Idempotency-Key": '"deploy-2026-01-01-abc"'}  # the IETF draft's form: the same key
    first = server.post("backup", CREATE, keyed)
    again = server.post("backup", CREATE, quoted)
    assert first.status == again.status == 200 and again.json()["replayed"] is True
    assert backups(settings) == 1
    # another body, another caller, no key: each is a new delivery
    other = json.dumps({"action": "create", "db": "prod", "kind": "predeploy"}).encode()
    assert "replayed" not in server.post("backup", other, keyed).json()
    assert "replayed" not in server.post("backup", CREATE, {**ADMIN, "Idempotency-Key": "deploy-2026-01-01-abc"}).json()
    assert "replayed" not in server.post("backup", CREATE, API).json()
    assert backups(settings) == 4
    # the same key at another target is not that answer either
    dry_run = json.dumps({"mode": "dry-run"}).encode()
    sync = server.post("content_sync", dry_run, keyed)
    assert "replayed" not in sync.json() and sync.json().get("report", sync.json())["job"] == "content_sync"


@pytest.mark.parametrize("headers, needle", [
    ([("Idempotency-Key", "x" * 256)], "Idempotency-Key"),
    ([("Idempotency-Key", "has space")], "Idempotency-Key"),
    ([("Idempotency-Key", "cl\xe9")], "Idempotency-Key"),
    ([("Idempotency-Key", "a"), ("Idempotency-Key", "b")], "one value"),
    ([("Idempotency-Key", '"a","b"')], "one value"),
], ids=["too-long", "space", "non-ascii", "twice", "list"])
def test_a_malformed_idempotency_key_is_400(world, headers, needle) -> None:
    settings, server = world
    reply = server.post("backup", CREATE, [*API.items(), *headers])
    assert reply.status == 400 and needle in reply.json()["error"], reply.text[:300]
    assert backups(settings) == 0


def delivery_rows(settings) -> list[tuple]:
    with psycopg.connect(settings.database_url("prod")) as conn:
        if conn.execute("select to_regclass('safesync.deliveries')").fetchone()[0] is None:
            return []
        return conn.execute("select state, status from safesync.deliveries").fetchall()


def test_u0000_in_a_body_is_400_before_anything_runs(world) -> None:
    """PostgreSQL cannot store U+0000: a body echoing one into the run's
    answer made the backup, then failed recording the delivery (500, row
    left 'running', so each retry made another backup)."""
    settings, server = world
    body = json.dumps({"action": "create", "db": "prod", "kind": "predeploy", "deployment": "dpl\u0000x"}).encode()
    reply = server.post("backup", body, {**API, "Idempotency-Key": "nul-1"})
    assert reply.status == 400 and "U+0000" in reply.json()["error"], reply.text[:300]
    event = json.dumps({"id": "evt_nul", "type": "deployment.created",
                        "payload": {"target": "production", "deployment": {"id": "dpl\u0000"}}}).encode()
    signature = hmac.new(sentinels.SECRETS["VERCEL_WEBHOOK_SECRET"].encode(), event, hashlib.sha1).hexdigest()
    reply = server.post("backup", event, {"x-vercel-signature": signature, "Content-Type": "application/json"})
    assert reply.status == 400 and "U+0000" in reply.json()["error"], reply.text[:300]
    assert backups(settings) == 0 and delivery_rows(settings) == []


@pytest.mark.parametrize("header", ["Upstash-Message-Id", "Upstash-Schedule-Id"])
@pytest.mark.parametrize("value", ["msg_\x00x", "msg_\x01", "m" * 257], ids=["nul", "control", "long"])
def test_a_malformed_qstash_id_header_is_400_before_anything_runs(world, header: str, value: str) -> None:
    """Those headers are unsigned and end up in the report and the delivery
    row; a NUL in one failed that write after the backup was made. The
    token verified, so the refusal is permanent to QStash: 489 +
    Upstash-NonRetryable-Error, not a 400 it re-sends for hours."""
    settings, server = world
    reply = server.post("backup", CREATE, {**qstash_headers(CURRENT, url_of("backup"), CREATE), header: value})
    assert reply.status == 489 and reply.headers["upstash-nonretryable-error"] == "true", reply.text[:300]
    assert header in reply.json()["error"]
    assert backups(settings) == 0 and delivery_rows(settings) == []
    # QStash's own ids, Latin-1 text included, are taken as they come
    ok = server.post("backup", CREATE, {**qstash_headers(CURRENT, url_of("backup"), CREATE), header: "msg_\u00e9" + "x" * 200})
    assert ok.status == 200, ok.text[:300]


def test_vercel_events_are_keyed_by_their_signed_event_id(world) -> None:
    settings, server = world

    def event(event_id: str) -> bytes:
        return json.dumps({"id": event_id, "type": "deployment.created", "createdAt": 1,
                           "payload": {"target": "production", "deployment": {"id": "dpl_1"}}}).encode()

    def post(body: bytes):
        signature = hmac.new(sentinels.SECRETS["VERCEL_WEBHOOK_SECRET"].encode(), body, hashlib.sha1).hexdigest()
        return server.post("backup", body, {"x-vercel-signature": signature, "Content-Type": "application/json"})

    assert "replayed" not in post(event("evt_1")).json()
    assert post(event("evt_1")).json()["replayed"] is True
    assert "replayed" not in post(event("evt_2")).json()
    assert backups(settings) == 2


OLD_TABLE = """
create schema safesync;
create table safesync.deliveries (
    message_id   text primary key,
    job          text not null,
    target       text not null,
    state        text not null check (state in ('running', 'done')),
    status       integer,
    result       jsonb,
    attempts     integer not null default 1,
    received_at  timestamptz not null default now(),
    finished_at  timestamptz
);
insert into safesync.deliveries (message_id, job, target, state, status, result)
values ('msg_old', 'backup', 'prod', 'done', 200, '{"ok": true, "job": "backup"}');
"""


def columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "select attname from pg_attribute where attrelid = 'safesync.deliveries'::regclass and attnum > 0 and not attisdropped order by attnum")]


def test_the_old_deliveries_table_is_migrated_in_place(world) -> None:
    settings, server = world
    url = settings.database_url("prod")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_TABLE)
    # an old row's bare message id replays nothing: the job runs and records the new way
    reply = server.post("backup", CREATE, qstash_headers(CURRENT, url_of("backup"), CREATE, message_id="msg_old"))
    assert reply.status == 200 and "replayed" not in reply.json(), reply.text[:300]
    assert "message_key" in columns(url) and "message_id" not in columns(url)
    with psycopg.connect(url) as conn:
        rows = dict(conn.execute("select delivery_key, source from safesync.deliveries").fetchall())
    assert rows["msg_old"] == "legacy" and len(rows) == 2  # history kept, one new row
    with psycopg.connect(url, autocommit=True) as conn:  # idempotent
        ensure_schema(conn)
        conn.execute(SCHEMA_SQL)
    assert backups(settings) == 1


def test_the_roles_script_migrates_the_old_table_too(make_db, write_settings) -> None:
    from safesync.functions.roles import generate

    url = make_db()
    create_lms(url, variant="prod")
    settings = write_settings({"prod": url, "dev": make_db()}, TOML)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_TABLE)
        conn.execute(generate(settings, "prod").encode())
        conn.execute(generate(settings, "prod").encode())  # and again: idempotent
    assert "message_key" in columns(url)
