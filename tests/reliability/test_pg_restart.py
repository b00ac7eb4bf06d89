"""PostgreSQL restarted in the middle of a run → a clear failure, nothing
half-written, and the next run succeeds.

The restart hits a dedicated embedded server (``shared.embedded``) in this
module's temp folder, never the session's. The moment is made certain: a
content sync is paused by its test hook after it wrote and before it
commits; a backup is held by a lock on one of the tables it must read.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import psycopg
import pytest

from safesync.shared.embedded import EmbeddedPostgres
from tests.fixtures.lms import create_lms, lms_config_toml

from .state import db_state

AREA = "postgres restart"


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg-restart") / "data").start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def deployment(own_server: EmbeddedPostgres, write_settings, monkeypatch):
    monkeypatch.setenv("PG_BIN", str(own_server.bin))
    names = {}
    with psycopg.connect(own_server.url(), autocommit=True) as conn:
        for role in ("dev", "prod", "staging"):
            name = f"r_{role}_{time.monotonic_ns()}"
            conn.execute(f'create database "{name}"')
            names[role] = name
    urls = {role: own_server.url(name) for role, name in names.items()}
    create_lms(urls["dev"], variant="dev")
    create_lms(urls["prod"], variant="prod")
    settings = write_settings(urls, lms_config_toml() + '\n[backup]\ndatabases = ["prod"]\ncompress_level = 1\n')
    yield settings, urls
    with psycopg.connect(own_server.url(), autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'drop database if exists "{name}" with (force)')


def restart(server: EmbeddedPostgres) -> None:
    """One ``pg_ctl restart`` (fast), with the options it was started with:
    the server goes away under a running job and comes back at once."""
    server._run("pg_ctl", "-D", str(server.home), "-w", "-t", "60", "-m", "fast", "restart")


def _clean_failure(answer) -> tuple[bool, str]:
    text = str(answer.body)
    ok = answer.status == 503 and answer.exit_code == 1 and "Traceback" not in text and bool(answer.body.get("error"))
    return ok, f"{answer.status} exit {answer.exit_code}: {answer.body.get('error')!r}"


def test_restart_before_a_content_sync_commits(own_server, deployment, tally) -> None:
    from safesync.functions.backup import list_backups, verify_backup
    from safesync.functions.content_sync import content_sync

    t = tally(AREA)
    settings, urls = deployment
    before = db_state(urls["prod"])
    paused, resume = threading.Event(), threading.Event()

    def hook(step: str, conn) -> None:
        if step == "before_commit":
            paused.set()
            resume.wait(60)

    result = {}
    worker = threading.Thread(target=lambda: result.update(answer=content_sync(settings, "sync", adopt=True, hook=hook)))
    worker.start()
    deadline = time.monotonic() + 60
    while not paused.wait(0.05) and worker.is_alive() and time.monotonic() < deadline:
        pass
    t.check(paused.is_set(), f"content sync never reached its commit: {result.get('answer') and result['answer'].body.get('error')}")
    restart(own_server)
    resume.set()
    worker.join(120)
    ok, where = _clean_failure(result["answer"])
    t.check(ok, f"content sync with PostgreSQL restarted before COMMIT → {where}")
    t.unchanged(before, db_state(urls["prod"]), "prod after the restarted content sync")
    t.check(all(verify_backup(settings, b, record=False).ok for b in list_backups(settings)), "a listed backup does not verify")
    again = content_sync(settings, "sync", adopt=True)
    t.check(again.status == 200, f"the next content sync → {again.status} {again.body.get('summary') or again.body.get('error')}")


def test_restart_while_a_backup_streams(own_server, deployment, tally) -> None:
    from safesync.functions.backup import list_backups, verify_backup
    from safesync.functions.backup.jobs import run_create

    t = tally(AREA)
    settings, urls = deployment
    before = db_state(urls["prod"])
    holder = psycopg.connect(urls["prod"])
    holder.execute("lock table public.lessons in access exclusive mode")
    result = {}
    worker = threading.Thread(target=lambda: result.update(answer=run_create(settings, "prod", "manual", trigger={"via": "reliability"})))
    worker.start()
    waiting = False
    with psycopg.connect(urls["prod"], autocommit=True) as watch:
        deadline = time.monotonic() + 60
        while not waiting and worker.is_alive() and time.monotonic() < deadline:
            waiting = bool(watch.execute("select 1 from pg_stat_activity where wait_event_type = 'Lock' and pid <> pg_backend_pid()").fetchone())
            time.sleep(0.02)
    t.check(waiting, "the backup never waited on the held table")
    restart(own_server)
    holder.close()
    worker.join(120)
    ok, where = _clean_failure(result["answer"])
    t.check(ok, f"backup with PostgreSQL restarted mid-dump → {where}")
    t.check(list_backups(settings) == [], f"a backup is listed after the failed run: {[b.id for b in list_backups(settings)]}")
    t.unchanged(before, db_state(urls["prod"]), "prod after the restarted backup")
    again = run_create(settings, "prod", "manual", trigger={"via": "reliability"})
    t.check(again.status == 200, f"the next backup → {again.status} {again.body.get('error')}")
    t.check([verify_backup(settings, b, record=False).ok for b in list_backups(settings)] == [True], "the next backup is not the one complete, verified backup")
