"""Calendar sync figures against the fake Google Calendar with 20 ms of
latency per HTTP request (the real client library, a real PostgreSQL 16):

- full sync of 10,000 upstream events in the 3-month window (9,400 single
  events, 150 weekly series with 3 exceptions each): wall time and API calls
  (target ≤ 5 list calls: pages of 2,500);
- incremental sync after 10 upstream changes (target: 1 list call);
- push of 500 local changes (target ≤ 10 batch calls: 50 per batch).
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import psycopg

from safesync.functions.calendar.sync import run_sync
from safesync.shared.config import load_settings
from tests.bench import Memory, embedded_server, memory_of_run
from tests.fake_calendar import FakeCalendar
from tests.fake_calendar.helpers import timed

SINGLES, SERIES, EXCEPTIONS_PER_SERIES = 9400, 150, 3
LATENCY_S = 0.02


def _seed(fake: FakeCalendar, now: datetime) -> int:
    store = fake.store
    for i in range(SINGLES):
        start = now + timedelta(days=1 + (i % 85), hours=i % 12)
        store.put_event("primary", {"id": f"s{i:07d}", "summary": f"Event {i}", "location": f"Room {i % 40}",
                                    "attendees": [{"email": f"user{i % 97}@example.com"}], **timed(start, 1)})
    for j in range(SERIES):
        first = (now + timedelta(days=1 + j % 7)).replace(hour=9 + j % 8, minute=0, second=0, microsecond=0)
        master = f"r{j:07d}"
        store.put_event("primary", {"id": master, "summary": f"Series {j}", "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=12"],
                                    **timed(first, 1, "Europe/Berlin")})
        for k in range(EXCEPTIONS_PER_SERIES):
            occurrence = store.instance_id("primary", master, (first + timedelta(weeks=k + 1)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            if k == 2:
                store.remove("primary", occurrence)
            else:
                store.edit("primary", occurrence, {"summary": f"Series {j} (moved)", **timed(first + timedelta(weeks=k + 1, hours=2), 1, "Europe/Berlin")})
    return SINGLES + SERIES * (1 + EXCEPTIONS_PER_SERIES)


def _timed_sync(fake: FakeCalendar, settings, mode: str) -> tuple[float, dict, Memory]:
    fake.reset_counts()
    with memory_of_run() as memory:
        start = time.perf_counter()
        answer = run_sync(settings, mode)
        wall = time.perf_counter() - start
    if answer.status != 200:
        raise RuntimeError(f"{mode} sync failed: {answer.body.get('error')}")
    return wall, answer.body, memory


def run() -> list[dict]:
    rows: list[dict] = []
    with embedded_server("bench-calendar-") as (pg, tmp):
        fake = FakeCalendar().start()
        saved = dict(os.environ)
        try:
            with psycopg.connect(pg.url(), autocommit=True) as conn:
                conn.execute("create database bench_calendar")
            config = tmp / "safesync.toml"
            config.write_text('[databases]\nprod = "PROD_DATABASE_URL"\n[storage]\nurl = "file://./runs"\n[calendar]\ndatabase = "prod"\n')
            os.environ.update(
                PROD_DATABASE_URL=pg.url("bench_calendar"),
                SAFESYNC_GOOGLE_API_ROOT=fake.root,
                SAFESYNC_GOOGLE_CREDENTIALS=fake.authorized_user_json(),
                SAFESYNC_ENCRYPTION_KEY=os.environ.get("SAFESYNC_ENCRYPTION_KEY") or base64.b64encode(os.urandom(32)).decode(),
            )
            settings = load_settings(config)
            now = datetime.now(timezone.utc)
            total = _seed(fake, now)
            fake.latency = LATENCY_S

            wall, body, memory = _timed_sync(fake, settings, "full")
            lists = fake.calls["list"]
            rows.append({"name": f"full sync, {total} events", "wall_s": round(wall, 2), **asdict(memory),
                         "api_calls": dict(fake.calls), "rows": body["details"]["counts"].get("inserted"),
                         "target": "≤ 5 list calls", "met": lists <= 5})

            for i in range(10):
                fake.store.edit("primary", f"s{i * 700:07d}", {"summary": f"changed {i}"})
            wall, body, memory = _timed_sync(fake, settings, "incremental")
            rows.append({"name": "incremental, 10 upstream changes", "wall_s": round(wall, 2), **asdict(memory),
                         "api_calls": dict(fake.calls), "rows": body["details"]["counts"].get("updated"),
                         "target": "1 list call", "met": fake.calls["list"] == 1})

            with psycopg.connect(pg.url("bench_calendar"), autocommit=True) as conn:
                conn.execute(
                    """update calendar.events set title = title || ' (edited in app)'
                        where id in (select id from calendar.events where recurrence is null and recurring_event_id is null
                                     order by google_event_id limit 500)"""
                )
            wall, body, memory = _timed_sync(fake, settings, "incremental")
            rows.append({"name": "push, 500 local changes", "wall_s": round(wall, 2), **asdict(memory),
                         "api_calls": dict(fake.calls), "rows": body["details"]["counts"].get("pushed"),
                         "target": "≤ 10 batch calls", "met": fake.calls["batch"] <= 10 and body["details"]["counts"].get("pushed") == 500})
        finally:
            os.environ.clear()
            os.environ.update(saved)
            fake.stop()
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
