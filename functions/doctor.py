"""``safesync doctor``: one command that tells a new user whether
everything will work — databases, roles, tools, storage, secrets, config —
as a checklist with one line of advice per problem. Exit 1 on any ✗.

Its report is stored like every run, so ``status`` shows the last result.
"""

from __future__ import annotations

import argparse
from typing import Iterator

from safesync.shared.config import Settings
from safesync.shared import preflight
from safesync.shared.errors import ConfigError
from safesync.shared.preflight import FAIL, OK, WARN, Check, DbFacts
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute


def run_all(settings: Settings) -> list[Check]:
    """Every check doctor shows: the generic ones (``shared.preflight``) and
    each job's own, reached through its face."""
    from safesync.functions.content_sync import check_content_sync

    return preflight.run_all(settings, check_content_sync, check_encryption_key)


def check_encryption_key(settings: Settings, facts: dict[str, DbFacts]) -> Iterator[Check]:
    """``SAFESYNC_ENCRYPTION_KEY`` judged by the calendar's own reading of it
    (doctor's separate one passed a 16-byte key the calendar refuses and
    failed a hex key it takes)."""
    from safesync.functions.calendar import ENCRYPTION_KEY_ENV, parse_encryption_key

    advice = "conference data is encrypted at rest: `openssl rand -base64 32`"
    try:
        key = parse_encryption_key(settings.env.get(ENCRYPTION_KEY_ENV))
    except ConfigError as exc:
        yield Check("secrets", ENCRYPTION_KEY_ENV, FAIL, exc.message, advice)
        return
    if key is not None:
        yield Check("secrets", ENCRYPTION_KEY_ENV, OK, f"{len(key) * 8}-bit key")
    elif "calendar" in settings.config.model_fields_set:
        yield Check("secrets", ENCRYPTION_KEY_ENV, FAIL, "not set but [calendar] is configured", advice)


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
