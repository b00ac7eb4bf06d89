"""The migrate actions as runs (``runner.execute``): rehearse and apply
hold the ``migrate`` lock on the target database and store their reports
under ``runs/migrate/``; plan is read-only and not stored."""

from __future__ import annotations

from typing import Any

from safesync.shared.config import Settings
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from .apply import run_apply
from .plan import build_plan
from .rehearse import run_rehearse


def _show_plan(settings: Settings, report: Report) -> None:
    result = build_plan(settings)
    report.details.update(plan=result.details())
    report.tables["plan"] = result.rows()
    report.warnings += result.warnings
    report.summary = result.describe()


def plan(settings: Settings, *, trigger: dict[str, Any] | None = None) -> Answer:
    """Read-only and not stored: a plan run must not hide the last apply in ``status``."""
    report = Report("migrate", "plan", trigger=trigger or {"via": "cli"})
    return execute(settings, report, lambda r: _show_plan(settings, r), needs_storage=False, record=False)


def rehearse(settings: Settings, *, trigger: dict[str, Any] | None = None) -> Answer:
    report = Report("migrate", "rehearse", trigger=trigger or {"via": "cli"})
    return execute(settings, report, lambda r: run_rehearse(settings, r), target=settings.config.migrate.database)


def apply(settings: Settings, *, skip_rehearsal: bool = False, trigger: dict[str, Any] | None = None) -> Answer:
    report = Report("migrate", "apply", trigger=trigger or {"via": "cli"})
    report.details["skip_rehearsal"] = skip_rehearsal
    return execute(settings, report, lambda r: run_apply(settings, r, skip_rehearsal), target=settings.config.migrate.database)
