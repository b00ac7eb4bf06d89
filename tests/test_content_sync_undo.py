"""Undo of a content sync on the LMS fixture (real PostgreSQL): exactly the
sync's changes go back, users' progress since stays."""

from __future__ import annotations

import gzip
import time
import uuid

import psycopg
import pytest

from safesync.functions.cli import main as cli_main
from safesync.functions.content_sync import content_sync, content_undo
from safesync.functions.serve import create_app
from safesync.shared import db
from tests import sentinels
from tests.fixtures.lms import LMS_CONTENT, LMS_PROTECTED


def fingerprints(url: str, tables=None) -> dict:
    with psycopg.connect(url) as conn:
        prints = db.database_fingerprint(conn)
    return {k: v for k, v in prints.items() if tables is None or k.split(".")[1] in tables}


def execute(url: str, statement: str, params=None):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def synced(settings) -> dict:
    answer = content_sync(settings, "sync", adopt=True)
    assert answer.status == 200, answer.body
    return answer.body


def progress(prod: str) -> str:
    """A user makes progress on an existing lesson after the sync; returns their id."""
    user = str(uuid.uuid4())
    execute(prod, "insert into users (id, email, created_at) values (%s, %s, now())", [user, f"{user}@example.com"])
    execute(prod, "insert into lesson_progress (user_id, lesson_id, completed_at, score) values (%s, 1, now(), 90)", [user])
    return user


def test_undo_puts_back_exactly_the_sync_and_keeps_users_progress(lms):
    make, dev, prod = lms
    settings = make()
    content_before = fingerprints(prod, LMS_CONTENT)
    sequences = "select last_value from lessons_id_seq"
    body = synced(settings)
    log = body["details"]["undo_log"]
    assert log["records"] > 0 and len(log["sha256"]) == 64 and log["key"].endswith(f"-{body['run_id']}.undo.gz")
    assert gzip.decompress(settings.storage.get_bytes(log["key"])).startswith(b'{"action":"sync","format":"safesync-undo/1"')
    content_synced = fingerprints(prod, LMS_CONTENT)
    assert content_synced != content_before
    seq_after_sync = execute(prod, sequences)
    progress(prod)
    users_now = fingerprints(prod, LMS_PROTECTED)

    dry = content_undo(settings, body["run_id"], dry_run=True)
    assert dry.status == 200, dry.body
    assert "rolled back" in dry.body["summary"] and fingerprints(prod, LMS_CONTENT) == content_synced
    digest = dry.body["details"]["plan_digest"]
    answer = content_undo(settings, body["run_id"], expect_plan=digest)
    assert answer.status == 200, answer.body
    assert answer.body["details"]["protection_proof"]["ok"] is True and answer.body["details"]["verified"] is True
    assert fingerprints(prod, LMS_CONTENT) == content_before  # every content row as before the sync
    assert fingerprints(prod, LMS_PROTECTED) == users_now  # the progress made since is kept
    assert execute(prod, sequences) == seq_after_sync  # sequences stay where they are
    tally = {r["table"]: r for r in answer.body["tables"]["tables"]}
    assert tally["lessons"]["remove"] > 0 and tally["lessons"]["restore"] > 0

    # the ledger is as before the (first) sync: no history, the same edits pending again, to adopt again
    again = content_sync(settings, "dry-run").body
    assert again["status"] == "refused" and "no ledger history" in again["summary"]
    assert {t["status"] for t in again["details"]["ledger_status"].values()} == {"none"}
    again = content_sync(settings, "dry-run", adopt=True).body
    assert again["status"] == "ok", again["summary"]
    assert {r["table"]: r["new"] for r in again["tables"]["tables"]}["lessons"] > 0
    assert "conflicts" not in again["details"]
    resynced = synced(settings)
    assert fingerprints(prod, LMS_CONTENT) == content_synced
    assert resynced["details"]["undo_log"]["key"] != log["key"]


def test_undo_of_an_undo_brings_the_sync_back(lms):
    make, dev, prod = lms
    settings = make()
    body = synced(settings)
    content_synced = fingerprints(prod, LMS_CONTENT)
    undone = content_undo(settings, body["run_id"])
    assert undone.status == 200, undone.body
    assert fingerprints(prod, LMS_CONTENT) != content_synced
    twice = content_undo(settings, body["run_id"])
    assert twice.status == 422 and f"already undone by run {undone.body['run_id']}" in twice.body["summary"]
    redo = content_undo(settings, undone.body["run_id"])
    assert redo.status == 200, redo.body
    assert fingerprints(prod, LMS_CONTENT) == content_synced
    assert content_sync(settings, "compare").body["summary"].endswith("content tables identical")
    # the sync is live again: it can be undone once more
    assert content_undo(settings, body["run_id"], dry_run=True).status == 200


def test_a_row_changed_in_production_since_is_a_conflict_unless_resolved(lms):
    make, dev, prod = lms
    body = synced(make())
    execute(prod, "update lessons set title = 'Edited in prod' where id = 5")  # a row the sync updated
    before = fingerprints(prod)
    refused = content_undo(make(), body["run_id"])
    assert refused.status == 422 and "lessons: 1 row(s) changed in production" in refused.body["summary"]
    shown = [r for r in refused.body["tables"]["conflicts"] if r["column"] == "title"]
    assert shown == [{"table": "lessons", "key": "5", "column": "title", "restore": shown[0]["restore"], "production": "Edited in prod", "resolution": "fail"}]
    assert "überarbeitet" not in shown[0]["restore"]
    assert fingerprints(prod) == before

    kept = content_undo(make(tail='[content_sync.options.lessons]\nundo_conflict = "keep"\n'), body["run_id"])
    assert kept.status == 200, kept.body
    assert execute(prod, "select title from lessons where id = 5") == [("Edited in prod",)]
    assert execute(prod, "select count(*) from lessons where title like '%überarbeitet%'") == [(0,)]


def test_a_row_the_sync_inserted_that_users_reference_is_refused_never_cascaded(lms):
    make, dev, prod = lms
    body = synced(make())
    new_lesson = execute(prod, "select max(id) from lessons")[0][0]
    user = progress(prod)
    execute(prod, "insert into lesson_progress (user_id, lesson_id, completed_at) values (%s, %s, now())", [user, new_lesson])
    before = fingerprints(prod)
    answer = content_undo(make(), body["run_id"])
    assert answer.status == 422 and "lesson_progress has 1 row(s) referencing lessons" in answer.body["summary"]
    assert fingerprints(prod) == before


def test_undoing_an_older_sync_under_a_newer_one_names_the_newer_run(lms):
    make, dev, prod = lms
    first = synced(make())
    execute(dev, "update lessons set title = 'Second push' where id = 5")
    second = synced(make())
    before = fingerprints(prod)
    answer = content_undo(make(), first["run_id"])
    assert answer.status == 422 and second["run_id"] in answer.body["summary"] and "undo those first" in answer.body["summary"]
    assert answer.body["tables"]["in the way"] == [{"run": second["run_id"], "tables": "public.lessons"}]
    assert fingerprints(prod) == before
    assert content_undo(make(), second["run_id"]).status == 200
    assert content_undo(make(), first["run_id"]).status == 200


def test_a_killed_sync_leaves_no_usable_undo_log_and_a_killed_undo_changes_nothing(lms, pg_server):
    make, dev, prod = lms
    settings = make()

    def kill(step, conn):
        if step == "before_commit":
            with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
                admin.execute("select pg_terminate_backend(%s)", [conn.info.backend_pid])

    before = fingerprints(prod)
    killed = content_sync(settings, "sync", adopt=True, hook=kill)
    assert killed.status == 503 and fingerprints(prod) == before
    run_id = killed.body["report"]["run_id"]
    assert any(o.key.endswith(f"-{run_id}.undo.gz") for o in settings.storage.list("runs/content_sync/"))  # stored, then killed
    answer = content_undo(settings, run_id)
    assert answer.status == 422 and "it did not commit" in answer.body["error"]

    body = synced(settings)
    progress(prod)
    before = fingerprints(prod)
    killed = content_undo(settings, body["run_id"], hook=kill)
    assert killed.status == 503 and "rolled back" in killed.body["error"]
    assert fingerprints(prod) == before
    assert content_undo(settings, body["run_id"]).status == 200  # and the next one just works


def test_a_sync_whose_undo_log_cannot_be_stored_does_not_commit(lms, monkeypatch):
    make, dev, prod = lms
    settings = make()
    before = fingerprints(prod)
    put = type(settings.storage).put

    def refuse_logs(self, key, data, **kw):
        if key.endswith(".undo.gz"):
            raise OSError("disk full")
        return put(self, key, data, **kw)

    monkeypatch.setattr(type(settings.storage), "put", refuse_logs)
    answer = content_sync(settings, "sync", adopt=True)
    assert answer.status == 503 and "undo log could not be stored" in answer.body["error"]
    assert fingerprints(prod) == before


def test_undo_over_http_needs_the_admin_token_and_bad_run_ids_are_400_or_exit_2(lms, capsys):
    make, dev, prod = lms
    settings = make()
    body = synced(settings)
    client = create_app().test_client()
    run = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}"}
    admin = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_ADMIN_TOKEN']}"}
    undo = {"mode": "undo", "run": body["run_id"], "dry_run": True}
    assert client.post("/content_sync", json=undo, headers=run).status_code == 403
    for bad, said in (
        ({"mode": "undo"}, 'needs "run"'),
        ({"mode": "undo", "run": None}, 'needs "run"'),
        ({"mode": "undo", "run": 123}, "run: Input should be a valid string"),
        ({"mode": "undo", "run": "../../etc/passwd"}, "12-hex run id"),
        ({"mode": "undo", "run": body["run_id"].upper()}, "12-hex run id"),
        ({"mode": "undo", "run": body["run_id"] + "\n"}, "12-hex run id"),
        ({"mode": "undo", "run": body["run_id"], "dry_run": "yes"}, "dry_run: Input should be a valid boolean"),
        ({"mode": "undo", "run": body["run_id"], "adopt": True}, 'not "adopt"'),
        ({"mode": "sync", "run": body["run_id"]}, "only apply to mode undo"),
    ):
        response = client.post("/content_sync", json=bad, headers=admin)
        assert response.status_code == 400 and said in response.get_json()["error"], (bad, response.get_json())
    missing = client.post("/content_sync", json={"mode": "undo", "run": "0123456789ab"}, headers=admin)
    assert missing.status_code == 404 and "no committed content sync" in missing.get_json()["error"]
    dry = client.post("/content_sync", json=undo, headers=admin)
    assert dry.status_code == 200 and "rolled back" in dry.get_json()["summary"]

    assert cli_main(["content", "undo", "not-a-run-id"]) == 2
    assert "12-hex run id" in capsys.readouterr().err
    assert cli_main(["content", "undo", body["run_id"], "--dry-run"]) == 0


def test_undo_of_a_later_sync_keeps_the_ledger_current(lms):
    """A sync on an established ledger, undone: its rows' entries go back,
    the summary adds up, and the next compare sees only that sync's rows."""
    make, dev, prod = lms
    synced(make())
    execute(dev, "update lessons set title = 'Second push' where id in (3, 4)")
    second = synced(make())
    assert content_undo(make(), second["run_id"]).status == 200
    assert execute(prod, "select count(*) from lessons where title = 'Second push'") == [(0,)]
    again = content_sync(make(), "dry-run").body
    assert again["status"] == "ok" and "conflicts" not in again["details"]
    assert {r["table"]: r["changed"] for r in again["tables"]["tables"]}["lessons"] == 2
    assert again["details"]["ledger_status"]["lessons"]["current"] is True  # no re-seed needed



def test_undo_of_a_table_matched_on_a_natural_key_with_translated_references(lms):
    """courses matched on slug (ids differ between environments), lessons'
    course_id translated: the undo deletes by natural key, restores
    updated rows in place (prod's ids kept) and re-checks hashes in the
    compared form."""
    make, dev, prod = lms
    settings = make(tail='[content_sync.options.courses]\nmatch_on = ["slug"]\n')
    before = fingerprints(prod, LMS_CONTENT)
    body = synced(settings)
    assert body["details"]["matching"]["lessons"]["translated"] == ["course_id"]
    answer = content_undo(settings, body["run_id"])
    assert answer.status == 200, answer.body
    assert fingerprints(prod, LMS_CONTENT) == before


@pytest.mark.parametrize("attack", ["GRANT", "TRUNCATE", "entries rewritten", "entries deleted"])
def test_the_ledger_changed_during_an_undo_by_anything_but_the_undo_is_a_violation(lms, attack):
    """An undo writes the ledger too (entries put back, its run record): the
    same watch as a sync's holds, so a trigger on a content table that
    rewrites or re-grants the ledger while the undo writes is caught and
    rolled back."""
    from tests.test_content_sync_proof import LEDGER_ATTACKS, ledger_state, state, trigger, violation

    make, dev, prod = lms
    settings = make()
    body = synced(settings)
    statement, change = LEDGER_ATTACKS[attack]
    trigger(prod, statement)  # fires when the undo puts lessons back
    before, ledger_before = state(prod), ledger_state(prod)
    answer = content_undo(settings, body["run_id"])
    assert answer.status == 422 and "rolled back" in answer.body["summary"], answer.body
    changes = violation(answer.body, "safesync.content_ledger")["changes"]
    assert any(change in c for c in changes), changes
    assert state(prod) == before and ledger_state(prod) == ledger_before


def test_fetch_log_times_the_fetch_of_the_log_not_the_whole_undo(lms):
    """``fetch_log_s`` is the download, checksum and index of the log: an
    undo that spends a second after writing does not show it there."""
    make, dev, prod = lms
    settings = make()
    body = synced(settings)

    def slow(point, conn):
        if point == "after_write":
            time.sleep(1.0)

    answer = content_undo(settings, body["run_id"], hook=slow)
    assert answer.status == 200, answer.body
    assert answer.body["timings"]["fetch_log_s"] < 1.0, answer.body["timings"]
