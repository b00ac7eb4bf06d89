"""``safesync doctor``: one command that tells a new user whether
everything will work — databases, roles, tools, storage, secrets, config —
as a checklist with one line of advice per problem. Exit 1 on any ✗.

Its report is stored like every run, so ``status`` shows the last result.
"""

from __future__ import annotations

import argparse

from safesync.shared.config import Settings
from safesync.shared import preflight
from safesync.shared.preflight import FAIL, WARN, Check
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute


def run_all(settings: Settings) -> list[Check]:
    """Every check doctor shows: the generic ones (``shared.preflight``) and
    each job's own, reached through its face."""
    from safesync.functions.content_sync import check_content_sync

    return preflight.run_all(settings, check_content_sync)


def doctor(settings: Settings) -> Answer:
    def job(report: Report) -> None:
        checks = run_all(settings)
        report.tables["checks"] = [c.row() for c in checks]
        failed = [c for c in checks if c.status == FAIL]
        warned = [c for c in checks if c.status == WARN]
        report.details["counts"] = {"ok": len(checks) - len(failed) - len(warned), "warn": len(warned), "fail": len(failed)}
        if failed:
            report.problems(f"{len(failed)} problem(s), {len(warned)} warning(s): " + "; ".join(f"{c.name}: {c.detail}" for c in failed[:3]))
        else:
            report.summary = f"all {len(checks)} checks passed" + (f" ({len(warned)} warning(s))" if warned else "")

    # Storage is one of the checks, so it must not be a precondition.
    return execute(settings, Report("doctor", "check"), job, needs_storage=False)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", help="check the setup before anything runs", parents=[parent])
    p.set_defaults(func=lambda args, settings: doctor(settings))
