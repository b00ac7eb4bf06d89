"""``status``: the last run of every job, from the run reports in storage.

Read-only and cheap: it lists ``runs/<job>/`` (names sort by time) and reads
only the newest report of each job.
"""

from __future__ import annotations

import argparse
from typing import Any

from safesync.shared.config import Settings
from safesync.shared.http import Call
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

JOBS = ("backup", "content_sync", "staging_clone", "validate", "calendar", "migrate", "doctor")


def last_runs(settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for job in JOBS:
        runs = settings.storage.list(f"runs/{job}/")
        if not runs:
            continue
        latest = settings.storage.get_json(runs[-1].key)
        rows.append(
            {
                "job": job,
                "action": latest.get("action"),
                "status": latest.get("status"),
                "finished_at": latest.get("finished_at"),
                "summary": latest.get("summary"),
            }
        )
    return rows


def status(settings: Settings) -> Answer:
    def job(report: Report) -> None:
        rows = last_runs(settings)
        report.tables["last runs"] = rows
        bad = [r for r in rows if r["status"] in ("failed", "refused")]
        if bad:
            report.problems(f"{len(bad)} job(s) whose last run did not succeed: {', '.join(r['job'] for r in bad)}")
        else:
            report.summary = f"{len(rows)} job(s) with runs, all healthy"

    return execute(settings, Report("status", "show"), job, record=False)


def handle_http(call: Call) -> Answer:
    return status(call.settings)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", help="last run of every job", parents=[parent])
    p.set_defaults(func=lambda args, settings: status(settings))
