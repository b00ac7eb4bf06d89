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
    # The dump itself, not only its manifest: pg_partition_tree lists nothing for a table that is not
    # partitioned, no --table was passed, and the "content" backup held every user table — which a
    # restore of it (said to leave "the rest of prod as it was") would have put back.
    from safesync.functions.backup.verify import read_toc

    dumped = {" ".join(e.line.split(" TABLE DATA ", 1)[1].split()[:2]) for e in read_toc(settings, info) if e.type == "TABLE DATA"}
    assert dumped == {f"public {t}" for t in LMS_CONTENT} | {"safesync content_ledger"}, dumped


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


def test_a_partial_backup_whose_dump_holds_more_is_never_restored(lms):
    """A "content" backup made before the --table fix held every table while
    its manifest said "these tables only"; a restore of it (reported as
    leaving the rest as it was) would have put back every user's progress as
    it was then. verify names it; restore refuses, nothing changed."""
    from safesync.functions.backup import create_backup
    from safesync.functions.backup.restore import restore_backup
    from safesync.shared.errors import Refused

    make, dev, prod = lms
    settings = make('presync_backup = "content"')
    info = create_backup(settings, "prod", "presync")  # the whole database, as the old "content" dumps were
    manifest = dict(info.manifest)
    manifest.update(scope="tables", tables={f"public.{t}": info.tables[f"public.{t}"] for t in LMS_CONTENT})
    settings.storage.put_json(info.manifest_key, manifest, overwrite=True)
    result = verify_backup(settings, info.id)
    assert not result.ok and any("beyond its scope" in p and "public payments" in p for p in result.all_problems), result.all_problems
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("update users set display_name = 'changed since' where email = (select min(email) from users)")
    with pytest.raises(Refused, match="partial backup .* holds .* more"):
        restore_backup(settings, info.id, "prod", confirm="prod")
    with psycopg.connect(prod) as conn:
        assert conn.execute("select display_name from users where email = (select min(email) from users)").fetchone()[0] == "changed since"
