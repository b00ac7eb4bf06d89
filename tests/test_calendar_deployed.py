"""The calendar targets as deployed: real functions-framework processes, one
per FUNCTION_TARGET (or ``safesync serve``), real PostgreSQL, the fake Google."""

from __future__ import annotations

import json
import os

import psycopg

from tests.fake_calendar.fixtures import cal_settings, fake, services  # noqa: F401

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
