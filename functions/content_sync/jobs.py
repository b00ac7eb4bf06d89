"""The content sync's actions as runs: each builds a Report and goes
through ``runner.execute`` (the target's lock, QStash de-duplication, the
run report under ``runs/content_sync/``), so HTTP, the CLI and library
callers behave identically. The flow itself is ``job.py`` (a sync) and
``undo.py`` (an undo).
"""

from __future__ import annotations

import re
from typing import Any

from safesync.shared.config import Settings
from safesync.shared.delivery import Delivery
from safesync.shared.errors import BadRequest
from safesync.shared.progress import Meter
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute

from . import undo
from .job import MODES, Hook, run

DIGEST = r"[0-9a-f]{64}"  # matched whole (re.fullmatch): "…\n" is not a digest


def content_undo(
    settings: Settings,
    run_id: str,
    *,
    dry_run: bool = False,
    expect_plan: str | None = None,
    trigger: dict[str, Any] | None = None,
    delivery: Delivery | None = None,
    hook: Hook | None = None,
) -> Answer:
    """Undo one committed content sync (or undo) under the runner: the
    sync's lock on the target, report under ``runs/content_sync/``,
    notification when refused or failed."""
    undo.check_run_id(run_id)
    if expect_plan is not None and (dry_run or not re.fullmatch(DIGEST, expect_plan)):
        raise BadRequest("expect_plan must be the 64-hex digest printed by undo --dry-run, given without dry_run")
    report = Report("content_sync", "undo-dry-run" if dry_run else "undo", trigger=trigger or {"via": "library"})

    def job(r: Report) -> None:
        undo.run(settings, r, run_id, dry_run=dry_run, expect_plan=expect_plan, hook=hook)

    return execute(settings, report, job, target=settings.config.content_sync.target, delivery=delivery)


def content_sync(
    settings: Settings,
    mode: str,
    *,
    expect_plan: str | None = None,
    adopt: bool = False,
    trigger: dict[str, Any] | None = None,
    delivery: Delivery | None = None,
    hook: Hook | None = None,
    progress: Meter | None = None,
) -> Answer:
    """Run one content sync action under the runner (lock on the target,
    QStash de-duplication, report stored under ``runs/content_sync/``).
    ``compare`` is read-only and takes no lock. ``adopt``: on a table's
    first run with the ledger, take the source's version of rows that differ
    without history (otherwise they are reported and a sync is refused)."""
    if mode not in MODES:  # the one check of the mode (HTTP's body model takes any text)
        raise BadRequest(f"mode must be one of {', '.join(MODES)} or undo")
    if expect_plan is not None and mode != "sync":
        raise BadRequest("expect_plan only applies to mode sync")
    if expect_plan is not None and not re.fullmatch(DIGEST, expect_plan):
        raise BadRequest("expect_plan must be the 64-hex plan digest printed by dry-run")
    target = settings.config.content_sync.target
    report = Report("content_sync", mode, trigger=trigger or {"via": "library"})

    def job(r: Report) -> None:
        run(settings, r, mode, expect_plan=expect_plan, adopt=adopt, trigger=trigger, hook=hook, progress=progress)

    return execute(settings, report, job, target=None if mode == "compare" else target, delivery=delivery)
