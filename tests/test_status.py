"""The status target: health at a glance, JSON and HTML; stale backups notify once."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import psycopg
import pytest

from safesync.functions.backup import create_backup, latest_backup
from safesync.functions.serve import create_app
from tests import sentinels

BEARER = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}"}


@pytest.fixture
def receiver(monkeypatch):
    """A local webhook receiver standing in for Slack."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SAFESYNC_NOTIFY_URL", f"http://127.0.0.1:{server.server_port}/hook")
    yield received
    server.shutdown()


@pytest.fixture
def backed_up(make_db, write_settings):
    url = make_db()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table t (id int primary key); insert into t select generate_series(1, 10)")
    settings = write_settings({"prod": url}, '[backup]\ndatabases = ["prod"]\n')
    create_backup(settings, "prod", "manual")
    return settings


def test_healthy_status_json_and_html(backed_up) -> None:
    client = create_app().test_client()
    body = client.get("/status", headers=BEARER).get_json()
    assert body["status"] == "ok" and body["details"]["health"] == "ok"
    assert body["details"]["backups"][0]["db"] == "prod"
    assert body["details"]["storage"]["objects"] >= 3
    page = client.get("/status", headers={**BEARER, "Accept": "text/html"})
    assert page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "safesync" in text and ">ok<" in text and "prod" in text and "<script" not in text


def test_stale_backup_is_failing_and_notifies_once(backed_up, receiver) -> None:
    info = latest_backup(backed_up, "prod")
    manifest = dict(info.manifest)
    old = datetime.now(timezone.utc) - timedelta(hours=30)
    manifest["started_at"], manifest["finished_at"] = old.isoformat(), (old + timedelta(minutes=1)).isoformat()
    backed_up.storage.put_json(info.manifest_key, manifest)
    client = create_app().test_client()
    for _ in range(2):
        body = client.post("/status", json={}, headers=BEARER).get_json()
        assert body["details"]["health"] == "failing"
        assert "30 h old" in body["summary"]
    assert len(receiver) == 1
    assert receiver[0]["event"] == "backup.stale" and "30 h old" in receiver[0]["text"]


def test_missing_backup_and_failed_run_show_in_health(make_db, write_settings) -> None:
    settings = write_settings({"prod": make_db()}, '[backup]\ndatabases = ["prod"]\n')
    settings.storage.put_json("runs/content_sync/20260101T000000Z-abc.json", {"action": "sync", "status": "failed", "summary": "boom"})
    body = create_app().test_client().get("/status", headers=BEARER).get_json()
    reasons = body["details"]["reasons"]
    assert any("no complete backup of prod" in r for r in reasons)
    assert any("content_sync sync failed: boom" in r for r in reasons)
    assert body["details"]["health"] == "failing"


def test_a_damaged_newest_backup_is_no_longer_invisible(backed_up) -> None:
    """Listing and "latest" pass over a backup whose manifest cannot be
    trusted or whose dump is gone, so the status page said "ok", dated by
    the backup before it."""
    import time

    from safesync.functions.backup.layout import BackupName

    settings = backed_up
    time.sleep(1.1)  # backup ids are per second
    broken = create_backup(settings, "prod", "manual")
    settings.storage.put(BackupName.parse(broken.id).manifest_key, b'{"manifest_version": 2, "id": ', overwrite=True)
    client = create_app().test_client()
    body = client.get("/status", headers=BEARER).get_json()["details"]
    assert body["health"] == "degraded", body["reasons"]
    assert any(broken.id in r and "unreadable manifest" in r for r in body["reasons"]), body["reasons"]
    time.sleep(1.1)
    gone = create_backup(settings, "prod", "manual")
    settings.storage.delete(BackupName.parse(gone.id).dump_key)
    reasons = client.get("/status", headers=BEARER).get_json()["details"]["reasons"]
    assert any(gone.id in r and "manifest without its dump" in r for r in reasons), reasons


def test_a_last_run_that_found_problems_is_not_ok(backed_up) -> None:
    """A run ends ``ok``, ``problems`` (it ran and found something wrong:
    validation findings, backups failing verification, a failed migration
    rehearsal), ``refused`` or ``failed``; only the last two were reasons,
    so with the newest validate reporting broken foreign keys the page said
    "all is well"."""
    summary = "prod: 3 problem(s) in foreign_keys"
    backed_up.storage.put_json("runs/validate/20260101T000000Z-abc.json", {"action": "validate", "status": "problems", "summary": summary})
    body = create_app().test_client().get("/status", headers=BEARER).get_json()
    assert body["details"]["health"] == "degraded", body["details"]["reasons"]
    assert body["details"]["reasons"] == [f"degraded: last validate validate found problems: {summary}"]
    assert body["status"] == "problems" and summary in body["summary"]


def test_a_kept_backup_that_failed_verification_is_not_ok(backed_up) -> None:
    """Only the newest backup's verification was a reason: with yesterday's
    backup (kept by retention) failing its checksum and today's not verified
    yet, the page listed "✗ failed" in the table and said "all is well"."""
    import time

    settings = backed_up
    older = latest_backup(settings, "prod")
    manifest = dict(older.manifest)
    manifest["verification"] = {"ok": False, "at": datetime.now(timezone.utc).isoformat(), "problems": ["sha256 mismatch"]}
    settings.storage.put_json(older.manifest_key, manifest, overwrite=True)
    time.sleep(1.1)  # backup ids are per second
    create_backup(settings, "prod", "manual")
    body = create_app().test_client().get("/status", headers=BEARER).get_json()["details"]
    assert body["health"] == "degraded", body["reasons"]
    assert body["reasons"] == [f"degraded: backup {older.id} of prod failed verification (sha256 mismatch)"]


def test_the_shipped_schedules_run_the_stale_backup_check(backed_up, receiver) -> None:
    """A backup older than 26 h notifies — but only from a status run, and
    nothing ran one but a person opening the page: a backup schedule that
    stopped firing (deleted, paused, every delivery refused) was silent.
    The shipped schedules file calls status hourly; its delivery, signed as
    QStash signs it, notifies once."""
    from pathlib import Path
    from urllib.parse import urlsplit

    from safesync.functions.schedules import load_schedules
    from tests.qstash_signer import qstash_headers

    shipped = Path(__file__).resolve().parents[1] / "infra" / "schedules.toml"
    [check] = [d for d in load_schedules(shipped, {"SAFESYNC_PUBLIC_URL": sentinels.PUBLIC_URL}).schedules if d.target == "status"]
    assert check.cron.split()[1:] == ["*", "*", "*", "*"]  # every hour: a stale backup is known within the hour
    info = latest_backup(backed_up, "prod")
    manifest = dict(info.manifest)
    old = datetime.now(timezone.utc) - timedelta(hours=30)
    manifest["started_at"], manifest["finished_at"] = old.isoformat(), (old + timedelta(minutes=1)).isoformat()
    backed_up.storage.put_json(info.manifest_key, manifest, overwrite=True)
    body = json.dumps(check.body).encode()
    response = create_app().test_client().post(urlsplit(check.destination).path, data=body,
                                               headers=qstash_headers(sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"], check.destination, body))
    assert response.status_code == 200 and response.get_json()["details"]["health"] == "failing", response.get_data()[:300]
    assert [m["event"] for m in receiver] == ["backup.stale"]


def test_no_backup_at_all_notifies_once_a_day(make_db, write_settings, receiver) -> None:
    """A stale backup notified, but no backup at all — the backup schedule
    never ran, or every backup is gone — only made the page "failing":
    nobody was told. It notifies once per database and UTC day while it lasts."""
    settings = write_settings({"prod": make_db()}, '[backup]\ndatabases = ["prod"]\n')
    client = create_app().test_client()
    for _ in range(2):
        body = client.post("/status", json={}, headers=BEARER).get_json()
        assert body["details"]["health"] == "failing" and "no complete backup of prod" in body["summary"]
    assert [(m["event"], m["db"]) for m in receiver] == [("backup.missing", "prod")]
    assert receiver[0]["text"] == "safesync: no complete backup of prod"
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    assert settings.storage.exists(f"status/missing-notified/prod/{day}.json")


def test_a_refused_sync_is_not_hidden_by_the_compare_run_after_it(make_db, write_settings) -> None:
    """Status judged the newest run of each job: a content sync refused
    (nothing synced), then any compare that found the tables equal, and the
    page said "all is well" though the sync never happened. Each job and
    action is judged by its own newest run: the refusal is a reason until
    a sync succeeds."""
    from safesync.functions.content_sync import content_sync

    dev, prod = make_db(), make_db()
    for url, rows in ((dev, 3), (prod, 3)):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table courses (id int primary key, title text not null)")
            conn.execute("insert into courses select g, 'course ' || g from generate_series(1, %s) g", [rows])
    settings = write_settings(
        {"dev": dev, "prod": prod},
        '[content_sync]\nsource = "dev"\ntarget = "prod"\ntables = ["courses"]\non_conflict = "fail"\n',
    )
    create_backup(settings, "prod", "manual")  # a sync writing nothing (the ledger aside) keeps no presync backup
    assert content_sync(settings, "sync", adopt=True).body["status"] == "ok"
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("update courses set title = 'edited in prod' where id = 1")
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update courses set title = 'edited in dev' where id = 1")
    refused = content_sync(settings, "sync").body
    assert refused["status"] == "refused", refused["summary"]
    with psycopg.connect(prod, autocommit=True) as conn:  # prod brought level by hand: a compare now finds nothing
        conn.execute("update courses set title = 'edited in dev' where id = 1")
    assert content_sync(settings, "compare").body["status"] == "ok"

    client = create_app().test_client()
    body = client.get("/status", headers=BEARER).get_json()["details"]
    assert body["health"] == "degraded", body["reasons"]
    assert body["reasons"] == [f"degraded: last content_sync sync refused: {refused['summary']}"]
    assert [(r["action"], r["status"]) for r in body["runs"] if r["job"] == "content_sync"] == [("compare", "ok"), ("sync", "refused")]

    assert content_sync(settings, "sync").body["status"] == "ok"
    body = client.get("/status", headers=BEARER).get_json()["details"]
    assert body["health"] == "ok", body["reasons"]


def test_kept_outcomes_are_not_run_records(backed_up) -> None:
    """The outcome kept per job and action lives outside the job's folder:
    listing, "newest" and look-up by run id see only the records."""
    from safesync.shared import runs
    from safesync.shared.report import Report

    report = Report("validate", "check")
    report.problems("prod: 1 problem(s) in foreign_keys")
    runs.store(backed_up, report)
    assert [r.run_id for r in runs.listing(backed_up, "validate")] == [report.run_id]
    assert runs.find(backed_up, "validate", report.run_id)["summary"] == report.summary
    [outcome] = runs.last_of_each_action(backed_up, "validate")
    assert outcome["status"] == "problems" and outcome["key"] == runs.key(report) and outcome["run_id"] == report.run_id
    odd = Report("validate", "../../backup/create")  # never a path: no outcome kept
    runs.store(backed_up, odd)
    assert [o["action"] for o in runs.last_of_each_action(backed_up, "validate")] == ["check"]
    assert not backed_up.storage.list("runs/backup/create")
