"""Run records: one layout, written by the runner and read back by id, by
job and newest first; other files beside them are not records."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from safesync.shared import runs
from safesync.shared.report import Report
from safesync.shared.storage import LocalStorage


class _Settings:
    def __init__(self, storage):
        self.storage = storage


def _report(job: str, started: datetime, run_id: str, finished: datetime) -> Report:
    report = Report(job=job, action="sync")
    report.started_at = started
    report.run_id = run_id
    report.finished_at = finished
    return report


def test_records_round_trip_newest_first_and_by_id(tmp_path) -> None:
    settings = _Settings(LocalStorage(tmp_path))
    t0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
    for i, (offset, run_id) in enumerate([(0, "aaa"), (5, "bbb"), (5, "ccc")]):
        runs.store(settings, _report("content_sync", t0 + timedelta(seconds=offset), run_id, t0 + timedelta(seconds=10 + i)))
    settings.storage.put("runs/content_sync/20261130T120005Z-bbb.undo", b"not a record")

    assert [r.run_id for r in runs.listing(settings, "content_sync")] == ["aaa", "bbb", "ccc"]
    assert runs.listing(settings, "content_sync")[0].started == t0
    # same second: the later finish first
    assert [r["run_id"] for r in runs.newest_first(settings, "content_sync", 10)] == ["ccc", "bbb", "aaa"]
    assert [r["run_id"] for r in runs.newest_first(settings, "content_sync", 1)] == ["ccc"]
    assert runs.find(settings, "content_sync", "bbb")["run_id"] == "bbb"
    assert runs.find(settings, "content_sync", "zzz") is None
    assert runs.find(settings, "validate", "aaa") is None
