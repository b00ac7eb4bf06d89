"""``migrate`` — a team's migration (a folder of ``.sql`` files, or its own
command: ``prisma migrate deploy``, ``alembic upgrade head``…) made safe:
rehearsed on a clone, backed up, applied with timeouts, validated, and
rolled back automatically when it fails.

- ``plan``: what would run, against which database (read-only, not stored).
- ``rehearse``: clone the target into ``rehearse_on``, migrate the clone,
  validate, diff target vs rehearsal (``rehearse.py``).
- ``apply``: only after a passing rehearsal of the same plan; premigrate
  backup, migrate, validate, roll back on failure (``apply.py``).

Rehearse and apply hold the ``migrate`` lock on the target database.
HTTP: POST ``/migrate`` ``{"action": "plan"|"rehearse"|"apply",
"skip_rehearsal": false}`` with the admin token.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from safesync.shared.config import Settings
from safesync.shared.errors import BadRequest
from safesync.shared.http import Call, validate_body
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from .apply import run_apply
from .plan import Plan, build_plan
from .rehearse import run_rehearse

__all__ = ["Plan", "apply", "build_plan", "handle_http", "plan", "register_cli", "rehearse"]


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


class MigrateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "skip_rehearsal": "no" is an error, not True
    action: Literal["plan", "rehearse", "apply"]
    skip_rehearsal: bool = False


def handle_http(call: Call) -> Answer:
    call.require_admin()
    body = validate_body(MigrateBody, call.body)
    if body.skip_rehearsal and body.action != "apply":
        raise BadRequest("skip_rehearsal only applies to action \"apply\"")
    trigger = call.trigger()
    if body.action == "plan":
        return plan(call.settings, trigger=trigger)
    if body.action == "rehearse":
        return rehearse(call.settings, trigger=trigger)
    return apply(call.settings, skip_rehearsal=body.skip_rehearsal, trigger=trigger)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("migrate", parents=[parent], help="migrations: plan, rehearse on a clone, apply with rollback")
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("plan", parents=[parent], help="what would run, against which database")
    p.set_defaults(func=lambda args, settings: plan(settings))
    p = actions.add_parser("rehearse", parents=[parent], help="run the migration on a clone of the target; diff and validate")
    p.set_defaults(func=lambda args, settings: rehearse(settings))
    p = actions.add_parser("apply", parents=[parent], help="back up, migrate, validate; roll back on failure")
    p.add_argument("--skip-rehearsal", action="store_true", help="apply without a fresh passing rehearsal (recorded)")
    p.set_defaults(func=lambda args, settings: apply(settings, skip_rehearsal=args.skip_rehearsal))
