"""SIGKILL a CLI job at random points of its work, many times, seeded.

``KillJob`` describes one job: its command line, the snapshot that must be
either exactly *before* or exactly *after* a complete run, and optional
extra checks. ``run_kill_trials`` first runs the job to completion on a
reference deployment (that gives the *after* snapshot and how long the work
lasts: from the job's first database session to its exit), then for every
trial builds a fresh deployment, starts the job, waits a random share of the
work time after the job's first database session, sends SIGKILL, and checks:

- the snapshot equals *before* or *after* (never anything in between);
- storage holds no complete-looking partial backup (every listed backup
  verifies against its manifest);
- the next run succeeds and ends in *after*.

A new job is one more ``KillJob`` in ``test_kill.py``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg

from .conftest import World, subprocess_env
from .figures import Tally
from .scale import SEED

POLL_S = 0.005


@dataclass
class KillJob:
    area: str
    argv: list[str]
    databases: list[str]  # whose sessions mark the start of the work
    snapshot: Callable[[World], Any]  # what must be before or after
    check: Callable[[World, str], list[str]] = field(default=lambda world, outcome: [])  # extra problems after a kill
    # A state other than before/after that is still whole by design (e.g. the
    # calendar commits page by page: k complete pages); None: there is none.
    between: Callable[[Any], bool] | None = None
    timeout_s: float = 120


def _first_session(admin_url: str, dbnames: list[str], proc: subprocess.Popen, timeout: float) -> float:
    """Wait until the job has a session on one of ``dbnames``; returns when."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select 1 from pg_stat_activity where datname = any(%s) and pid <> pg_backend_pid() "
                "and (application_name like 'safesync%%' or application_name like 'pg\\_%%')",
                [dbnames],
            ).fetchone()
            if row:
                return time.monotonic()
            if proc.poll() is not None:
                return time.monotonic()
            time.sleep(POLL_S)
    raise AssertionError(f"the job never opened a session on {dbnames}")


def _spawn(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "safesync.functions.cli", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
    )


def _dbnames(world: World, names: list[str]) -> list[str]:
    return [world.urls[n].rsplit("/", 1)[1] for n in names]


def run_to_end(world: World, job: KillJob, admin_url: str) -> tuple[float, str]:
    """(work seconds, output) of a complete run; fails unless exit 0."""
    proc = _spawn(job.argv)
    start = _first_session(admin_url, _dbnames(world, job.databases), proc, job.timeout_s)
    out, _ = proc.communicate(timeout=job.timeout_s)
    work = time.monotonic() - start
    assert proc.returncode == 0, f"{job.argv} failed ({proc.returncode}): {out[-2000:]}"
    return work, out


def run_kill_trials(t: Tally, job: KillJob, new_world: Callable[[], World], admin_url: str, trials: int) -> None:
    reference = new_world()
    before = job.snapshot(reference)
    work, _ = run_to_end(reference, job, admin_url)
    after = job.snapshot(reference)
    assert before != after, f"{job.area}: the reference run changed nothing; the trial would prove nothing"
    t.figure("work s", round(work, 2))
    outcomes: Counter[str] = Counter()
    for trial in range(trials):
        rng = random.Random(f"{SEED}:{job.area}:{trial}")
        world = new_world()
        assert job.snapshot(world) == before, "a fresh deployment must start where the reference started"
        proc = _spawn(job.argv)
        started = _first_session(admin_url, _dbnames(world, job.databases), proc, job.timeout_s)
        delay = rng.uniform(0, work)
        time.sleep(max(0.0, started + delay - time.monotonic()))
        exited_before = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_sessions_gone(admin_url, _dbnames(world, job.databases))
        now = job.snapshot(world)
        outcome = "before" if now == before else "after" if now == after else "partial"
        if outcome == "partial" and job.between is not None and job.between(now):
            outcome = "between"
        outcomes[outcome] += 1
        label = f"trial {trial}: SIGKILL {delay:.3f}s into {work:.2f}s of work{' (already exited)' if exited_before else ''}"
        t.check(outcome != "partial", f"{label}: target neither before nor after", strict=False)
        problems = job.check(world, outcome)
        t.check(not problems, f"{label}: {'; '.join(problems)}", strict=False)
        proc2 = _spawn(job.argv)
        out, _ = proc2.communicate(timeout=job.timeout_s)
        t.check(proc2.returncode == 0, f"{label}: the next run failed ({proc2.returncode}): {out[-500:]}", strict=False)
        t.check(job.snapshot(world) == after, f"{label}: the next run did not end where a clean run ends", strict=False)
        problems = job.check(world, "after")
        t.check(not problems, f"{label}: after the next run: {'; '.join(problems)}", strict=False)
    t.figure("trials", trials)
    t.figure("killed at", ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())))
    assert t.unexpected == 0, "\n".join(t.notes)


def _wait_sessions_gone(admin_url: str, dbnames: list[str], timeout: float = 30) -> None:
    """A killed client's server sessions end (and roll back) asynchronously."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            left = conn.execute(
                "select count(*) from pg_stat_activity where datname = any(%s) and pid <> pg_backend_pid() "
                "and (application_name like 'safesync%%' or application_name like 'pg\\_%%')",
                [dbnames],
            ).fetchone()[0]
            if not left:
                return
            time.sleep(0.02)
    raise AssertionError(f"sessions of the killed job still alive on {dbnames}")
