"""Faults: the CLI process SIGKILLed at random points of a backup, a content
sync, a staging clone and a calendar full sync (see ``kill.py``)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Callable

import pytest

from .conftest import World, make_world
from tests.fake_calendar.fixtures import fake  # noqa: F401  (fixture)

from .kill import KillJob, run_kill_trials
from .scale import pick
from .state import db_state

TRIALS = pick(1, 3, 8)


def complete_backups_verify(world: World, outcome: str) -> list[str]:
    """Every backup the catalog lists is whole: its dump matches its manifest."""
    from safesync.functions.backup import list_backups, verify_backup

    problems = []
    for info in list_backups(world.settings):
        result = verify_backup(world.settings, info, record=False)
        if not result.ok:
            problems.append(f"listed backup {info.id} fails verification: {result.all_problems[:1]}")
    return problems


def backups(world: World) -> int:
    from safesync.functions.backup import list_backups

    return len(list_backups(world.settings))


@pytest.fixture
def new_world(pg_server, make_db, write_settings, monkeypatch, tmp_path) -> Callable[..., World]:
    """A fresh deployment per call, each with its own storage folder (the
    config file, and so the CLI, points at the newest)."""
    counter = itertools.count()

    def factory(**kw) -> World:
        return make_world(pg_server, make_db, write_settings, monkeypatch, storage_url=f"file://{tmp_path}/storage-{next(counter)}", **kw)

    return factory


# The LMS lives in public; other schemas hold per-deployment bookkeeping
# (e.g. calendar.schema_migrations.applied_at) that differs between the
# reference deployment and a trial's.
def lms(world: World, name: str):
    return db_state(world.urls[name], ["public"])


JOBS = [
    KillJob(
        "kill: backup", ["backup", "create", "--db", "prod", "--json"], ["prod"],
        snapshot=lambda w: (lms(w, "prod"), backups(w)),
        check=complete_backups_verify,
    ),
    KillJob(
        "kill: content sync", ["content", "sync", "--adopt", "--json"], ["prod", "dev"],
        snapshot=lambda w: (lms(w, "prod"), lms(w, "dev")),
        check=complete_backups_verify,
    ),
    KillJob(
        "kill: staging clone", ["staging", "clone", "--json"], ["staging", "dev"],
        snapshot=lambda w: (lms(w, "staging"), lms(w, "dev")),
        check=complete_backups_verify,
    ),
]


@pytest.mark.parametrize("job", JOBS, ids=[j.area.split(": ")[1].replace(" ", "_") for j in JOBS])
def test_sigkill_leaves_the_target_before_or_after(new_world, pg_server, tally, job: KillJob) -> None:
    run_kill_trials(tally(job.area), job, new_world, pg_server.admin_url, TRIALS)


# --- calendar: a full sync killed while it writes its pages -------------------
CAL_EVENTS, CAL_PAGE = 120, 20
# Writing is made slow on purpose (a per-row sleep trigger), so random kills
# land between and inside page transactions rather than during the listing.
SLOW_WRITES = """
create or replace function public.reliability_slow_row() returns trigger language plpgsql as
$$ begin perform pg_sleep(0.004); return new; end $$;
create trigger reliability_slow before insert on calendar.events for each row execute function public.reliability_slow_row();
"""


def calendar_snapshot(world: World):
    import psycopg

    with psycopg.connect(world.urls["prod"]) as conn:
        rows = conn.execute("select google_event_id, title from calendar.events where google_event_id is not null").fetchall()
        token = conn.execute("select count(*) from calendar.sync_state where sync_token is not null").fetchone()[0]
    return len(rows), bool(token), frozenset(rows)


def whole_pages(snapshot) -> bool:
    """k complete pages, and no sync token before the last page."""
    count, token, _ = snapshot
    return count % CAL_PAGE == 0 and not token


@pytest.fixture
def calendar_world(new_world, fake) -> Callable[[], World]:
    from tests.fake_calendar.helpers import NOW, event, gid

    for i in range(CAL_EVENTS):
        fake.store.put_event("primary", event(gid(i), f"Event {i}", NOW + timedelta(days=1, minutes=30 * i)))

    def factory() -> World:
        import psycopg

        world = new_world(extra_toml=f"page_size = {CAL_PAGE}\n", google_root=fake.root)
        with psycopg.connect(world.urls["prod"], autocommit=True) as conn:
            conn.execute(SLOW_WRITES)
        return world

    return factory


def test_sigkill_mid_calendar_page(calendar_world, pg_server, tally) -> None:
    job = KillJob(
        "kill: calendar page", ["calendar", "sync", "--mode", "full", "--json"], ["prod"],
        snapshot=calendar_snapshot, between=whole_pages,
    )
    run_kill_trials(tally(job.area), job, calendar_world, pg_server.admin_url, pick(2, 4, 10))
