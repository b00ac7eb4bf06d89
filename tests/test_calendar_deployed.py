"""The calendar targets as deployed: real functions-framework processes, one
per FUNCTION_TARGET (or ``safesync serve``), real PostgreSQL, the fake Google."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import psycopg
import pytest

from tests.fake_calendar.fixtures import cal_settings, fake, qstash, services  # noqa: F401
from tests.fake_calendar.helpers import NOW, event, gid, qstash_delivery, rows

SYNC_URL = "https://safesync-calendar-sync-abc123-ew.a.run.app"


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}", "Content-Type": "application/json"}


def test_schema_dropped_under_a_running_process_is_a_503_then_recreated_or_reported(fake, cal_settings, services):
    settings = cal_settings()
    sync = services.start("calendar_sync", SYNC_URL, {"SAFESYNC_PUBLIC_URL": SYNC_URL})
    status = json.dumps({"action": "status"}).encode()

    def ask():
        return services.request("POST", f"{SYNC_URL}/calendar_sync", status, bearer())

    assert ask().status == 200  # migrated, and remembered by this process
    url = settings.database_url("prod")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop schema calendar cascade")
    gone = ask()
    assert gone.status == 503, gone.body
    assert "calendar tables in database 'prod' are missing" in gone.json()["error"] and "re-creates" in gone.json()["error"]
    again = ask()
    assert again.status == 200, again.body
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select to_regclass('calendar.rate_limits') is not null").fetchone()[0]
        # Part of the schema gone while its migration stays recorded: reported, never papered over.
        conn.execute("drop table calendar.rate_limits")
    assert ask().status == 503
    damaged = ask()
    assert damaged.status == 503 and "calendar.rate_limits missing although" in damaged.json()["error"], damaged.body
    assert sync.proc.poll() is None


def deployed_services(tmp_path) -> dict[str, dict[str, str]]:
    """The environment infra/deploy.sh gives the calendar_sync and
    calendar_notify services (first deploy of both: URLs learnt on the way)."""
    from tests.test_infra import flag, run_deploy

    done, calls = run_deploy(tmp_path / "deploy", "calendar_sync", "calendar_notify", env={"TAG": "t1"})
    assert done.returncode == 0, done.stderr
    envs: dict[str, dict[str, str]] = {}
    for call in calls:
        if call[:2] == ["run", "deploy"]:
            envs[call[2]] = dict(kv.split("=", 1) for kv in flag(call, "--set-env-vars").split(","))
        elif call[:3] == ["run", "services", "update"]:
            envs[call[3]].update(kv.split("=", 1) for kv in flag(call, "--update-env-vars").split(","))
    return {t: envs[f"safesync-{t.replace('_', '-')}"] for t in ("calendar_sync", "calendar_notify")}


def start_layout(layout, services, tmp_path) -> str:
    """Start the services of a layout; returns the calendar_sync base URL."""
    if layout == "serve":
        public = os.environ["SAFESYNC_PUBLIC_URL"]
        services.start(None, public, {"SAFESYNC_PUBLIC_URL": public})
        return public
    envs = deployed_services(tmp_path)
    for target, env in envs.items():
        assert env["FUNCTION_TARGET"] == target
        own = {k: v for k, v in env.items() if k not in ("SAFESYNC_CONFIG", "FUNCTION_TARGET")}
        services.start(target, env["SAFESYNC_PUBLIC_URL"], own)
    return envs["calendar_sync"]["SAFESYNC_PUBLIC_URL"]


def advisory_locks(settings) -> int:
    with psycopg.connect(settings.database_url("prod"), autocommit=True) as conn:
        return conn.execute("select count(*) from pg_locks where locktype = 'advisory' and database = "
                            "(select oid from pg_database where datname = current_database())").fetchone()[0]


@pytest.mark.parametrize("layout", ["per-target", "serve"])
def test_google_notifications_reach_calendar_notify_and_queue_a_sync_in_every_layout(
    layout, fake, qstash, cal_settings, services, tmp_path
):
    settings = cal_settings()
    fake.store.put_event("primary", event(gid(0), "Standup", NOW + timedelta(days=1)))
    sync_base = start_layout(layout, services, tmp_path)
    watched = services.request("POST", f"{sync_base}/calendar_sync", json.dumps({"action": "watch"}).encode(), bearer())
    assert watched.status == 200, watched.body
    [channel] = fake.store.channels.values()
    handshake = fake.store.notifications.pop()
    assert handshake["address"] == channel["address"]
    answer = services.request("POST", handshake["address"], b"", handshake["headers"])  # as Google sends it
    assert answer.status == 200 and answer.json()["ignored"] == "channel handshake", answer.body

    fake.store.edit("primary", gid(0), {"summary": "Standup, moved"})
    note = fake.store.notifications.pop()
    fake.latency = 6.0  # a slow Google: the answer must not wait for it
    calls_before = sum(fake.calls.values())
    started = time.monotonic()
    answer = services.request("POST", note["address"], b"", note["headers"])
    elapsed = time.monotonic() - started
    assert answer.status == 200 and answer.json()["queued"] is True, answer.body
    assert elapsed < fake.latency, elapsed  # (typically ~0.1 s; the bound only has to beat one Google call)
    assert sum(fake.calls.values()) == calls_before  # Google was not called at all
    assert advisory_locks(settings) == 0  # no lock outlives the request
    fake.latency = 0

    [message] = qstash.published
    assert message["destination"] == f"{sync_base}/calendar_sync"
    body, headers = qstash_delivery(message)
    synced = services.request("POST", message["destination"], body, headers)
    assert synced.status == 200, synced.body
    assert rows(settings)[gid(0)]["title"] == "Standup, moved"
