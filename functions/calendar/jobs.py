"""The calendar's read actions as runs (``runner.execute``, not stored, no
storage needed): ``status_answer`` and ``events_answer``. The sync run is
``sync.run_sync``, the channel renewal ``watch.watch``.
"""

from __future__ import annotations

from safesync.shared.config import Settings
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from . import reads
from .status import calendar_status
from .sync import JOB


def status_answer(settings: Settings) -> Answer:
    def job(report: Report) -> None:
        info = calendar_status(settings)
        report.details.update(info)
        report.tables["calendars"] = info["calendars"]
        if info["failed"]:
            report.tables["failed events"] = info["failed"]
        if info["health"] == "ok":
            report.summary = f"ok: {info['reason']}; {info['pending']} pending, {info['conflicts_this_week']} conflict(s) this week"
        else:
            report.problems(f"{info['health']}: {info['reason']}")

    return execute(settings, Report(JOB, "status"), job, record=False, needs_storage=False)


def events_answer(settings: Settings, start: str, end: str) -> Answer:
    """The events of a window as a report (the CLI's; HTTP answers with
    ``http.events_response``: it needs headers)."""
    window = reads.check_window(settings, start, end)
    etag, body, _ = reads.read_events(settings, *window)
    report = Report(JOB, "events")

    def job(r: Report) -> None:
        r.details.update(etag=etag, count=body["count"])
        r.tables["events"] = [
            {k: e[k] for k in ("start", "end", "title", "status", "sync_status", "google_event_id")} for e in body["events"]
        ]
        r.summary = f"{body['count']} event(s) from {body['from']} to {body['to']}"

    return execute(settings, report, job, record=False, needs_storage=False)
