"""content_sync.presync_backup = full | content | none, on the LMS fixture."""

from __future__ import annotations

import threading

import psycopg
import pytest

from safesync.functions.backup.catalog import get_backup, list_backups
from safesync.functions.backup.verify import verify_backup
from safesync.functions.content_sync import content_sync, content_undo
from safesync.shared.errors import ConfigError
from tests.fixtures.lms import LMS_CONTENT


def lessons(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from lessons").fetchone()[0]


def test_full_backup_runs_beside_the_sync_on_its_own_snapshot(lms):
    make, dev, prod = lms
    settings = make()
    before = lessons(prod)
    seen = {}

    def at(step, conn):
        if step == "after_write":  # the sync has written; the backup, started with the run, still sees the old rows
            seen["lessons_in_sync"] = conn.execute("select count(*) from lessons").fetchone()[0]

    answer = content_sync(settings, "sync", adopt=True, hook=at)
    assert answer.status == 200, answer.body
    backup = answer.body["details"]["safety_backup"]
    assert backup["scope"] == "full" and backup["kind"] == "presync"
    info = get_backup(settings, backup["id"])
    assert seen["lessons_in_sync"] > before and info.tables["public.lessons"] == before
    assert {"public.users", "public.lesson_progress"} <= set(info.tables)
    assert "safety_backup_s" in answer.body["timings"] and "safety_backup_wait_s" in answer.body["timings"]


def test_content_backup_dumps_only_content_tables_and_the_ledger(lms):
    make, dev, prod = lms
    settings = make('presync_backup = "content"')
    assert content_sync(settings, "sync", adopt=True).status == 200  # first sync: no ledger yet
    with psycopg.connect(dev) as conn:
        conn.execute("update lessons set title = 'again' where id = 3")
    answer = content_sync(settings, "sync")
    assert answer.status == 200, answer.body
    info = get_backup(settings, answer.body["details"]["safety_backup"]["id"])
    assert set(info.tables) == {f"public.{t}" for t in LMS_CONTENT} | {"safesync.content_ledger"}
    assert verify_backup(settings, info.id).ok


def test_none_relies_on_the_undo_log_and_needs_it(lms):
    make, dev, prod = lms
    settings = make('presync_backup = "none"')
    answer = content_sync(settings, "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert answer.body["details"]["safety_backup"]["scope"] == "none" and list_backups(settings) == []
    assert content_undo(settings, answer.body["run_id"]).status == 200
    with pytest.raises(ConfigError, match="needs the undo log"):
        make('presync_backup = "none"\nundo_log = false')


def test_a_failed_backup_means_no_commit(lms, monkeypatch):
    make, dev, prod = lms
    settings = make()
    before = lessons(prod)
    put = type(settings.storage).put

    def no_dumps(self, key, data, **kw):
        if key.endswith(".dump"):
            raise OSError("bucket gone")
        return put(self, key, data, **kw)

    monkeypatch.setattr(type(settings.storage), "put", no_dumps)
    answer = content_sync(settings, "sync", adopt=True)
    assert answer.status >= 500 and "presync backup failed" in answer.body["error"]
    assert lessons(prod) == before


def test_the_full_backup_overlaps_the_compare_and_writes(lms, monkeypatch):
    """Deterministic overlap: the backup's upload is held until the sync has
    compared and written (its ``after_write`` point). A backup taken before
    the compare — or one the compare waited for — would never be released:
    the sync would never reach that point."""
    make, dev, prod = lms
    settings = make()
    written = threading.Event()
    released_by_the_sync = []
    put = type(settings.storage).put

    def held(self, key, data, **kw):
        if key.endswith(".dump"):
            released_by_the_sync.append(written.wait(30))
        return put(self, key, data, **kw)

    def at(step, conn):
        if step == "after_write":
            written.set()

    monkeypatch.setattr(type(settings.storage), "put", held)
    answer = content_sync(settings, "sync", adopt=True, hook=at)
    assert answer.status == 200, answer.body
    assert released_by_the_sync == [True]  # the upload was still running when the sync had written
    assert "safety_backup_wait_s" in answer.body["timings"]  # and the sync waited for it only at commit
