"""``content_sync``: push content tables from dev to prod without ever
touching user data — ``compare``, ``dry-run`` (the real sync, rolled back,
with a plan digest) and ``sync`` (``expect_plan`` pins a reviewed plan).

HTTP target ``content_sync``: ``{"mode": "compare" | "dry-run" | "sync",
"expect_plan": "<digest>", "adopt": true}`` or ``{"mode": "undo", "run":
"<run id>", "dry_run": true, "expect_plan": …}``. CLI: ``safesync content
compare | dry-run | sync [--adopt] [--expect-plan DIGEST]``, ``safesync
content undo RUN_ID [--dry-run] [--expect-plan DIGEST]``. Modules:
``plan`` (config → tables, keys, match_on and FK translations, drift, FK
order, protected set; ``TableSpec`` is the shared engine's ``TableShape``
plus what the writer needs, translated FKs read as the parent's natural
key), ``ledger`` (the
three-way ancestor kept in the target), ``conflicts`` (three-way
classification), ``apply`` (staging, upsert, deletes, sequences), ``proof``
(protection proof), ``digest`` (plan digest), ``safety`` (undo point),
``undolog`` (the undo log's format), ``undo`` (putting a run back),
``job`` (the flow). Rows are compared by the one engine all jobs share:
``shared.rowhash`` (SQL row hashes, key expressions) and ``shared.rowdiff``
(key-range checksum descent, both sides at once).
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from safesync.shared.config import Settings
from safesync.shared.delivery import Delivery
from safesync.shared.errors import BadRequest
from safesync.shared.http import Call, validate_body
from safesync.shared.progress import Meter, terminal
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute

from . import undo
from .job import MODES, Hook, run

__all__ = ["content_sync", "content_undo", "handle_http", "register_cli"]

_DIGEST = r"^[0-9a-f]{64}$"  # pydantic (Rust regex): "$" is the end of the text only


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["compare", "dry-run", "sync", "undo"]
    expect_plan: str | None = Field(None, pattern=_DIGEST)
    adopt: StrictBool = False
    run: str | None = Field(None, pattern=r"^[0-9a-f]{12}$")  # undo: the run to undo
    dry_run: StrictBool = False  # undo: do it and roll back


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
    if expect_plan is not None and (dry_run or not re.fullmatch(_DIGEST, expect_plan)):
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
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}")
    if expect_plan is not None and mode != "sync":
        raise BadRequest("expect_plan only applies to mode sync")
    if expect_plan is not None and not re.fullmatch(_DIGEST, expect_plan):
        raise BadRequest("expect_plan must be the 64-hex plan digest printed by dry-run")
    target = settings.config.content_sync.target
    report = Report("content_sync", mode, trigger=trigger or {"via": "library"})

    def job(r: Report) -> None:
        run(settings, r, mode, expect_plan=expect_plan, adopt=adopt, trigger=trigger, hook=hook, progress=progress)

    return execute(settings, report, job, target=None if mode == "compare" else target, delivery=delivery)


def handle_http(call: Call) -> Answer:
    body = validate_body(Body, call.body)
    if body.mode == "undo":
        call.require_admin()  # it rewrites production content, like a restore
        if body.run is None or body.adopt:
            raise BadRequest('mode undo takes "run" (the run id to undo), "dry_run" and "expect_plan", not "adopt"')
        return content_undo(call.settings, body.run, dry_run=body.dry_run, expect_plan=body.expect_plan, trigger=call.trigger(), delivery=call.delivery)
    if body.run is not None or body.dry_run:
        raise BadRequest('"run" and "dry_run" only apply to mode undo')
    return content_sync(
        call.settings,
        body.mode,
        expect_plan=body.expect_plan,
        adopt=body.adopt,
        trigger=call.trigger(),
        delivery=call.delivery,
    )


def _cli(args: argparse.Namespace, settings: Settings, mode: str) -> Answer:
    """On a terminal: tables compared and written, rows and bytes copied."""
    with terminal(f"content {mode}", quiet=args.json) as meter:
        return content_sync(
            settings, mode, expect_plan=getattr(args, "expect_plan", None), adopt=args.adopt, trigger={"via": "cli"}, progress=meter
        )


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("content", help="content sync dev → prod: compare, dry-run, sync", parents=[parent])
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    helps = {
        "compare": "what differs per content table (read-only)",
        "dry-run": "the real sync, rolled back: counts, samples, protection proof, plan digest",
        "sync": "safety backup, then write new and changed content in one transaction",
    }
    for mode in MODES:
        p = actions.add_parser(mode, help=helps[mode], parents=[parent])
        p.add_argument(
            "--adopt",
            action="store_true",
            help="first run with the ledger: take the source's version of rows that differ without history (review them first)",
        )
        if mode == "sync":
            p.add_argument("--expect-plan", metavar="DIGEST", help="refuse unless the plan digest still matches (from dry-run)")
        p.set_defaults(func=lambda args, settings, mode=mode: _cli(args, settings, mode))
    p = actions.add_parser("undo", help="put back exactly what one sync (or undo) changed, keeping every change since", parents=[parent])
    p.add_argument("run_id", metavar="RUN_ID", help="the run id of the sync to undo (its report's run_id)")
    p.add_argument("--dry-run", action="store_true", help="do it and roll back: what would be put back, conflicts, plan digest")
    p.add_argument("--expect-plan", metavar="DIGEST", help="refuse unless the undo plan digest still matches (from --dry-run)")
    p.set_defaults(func=lambda args, settings: content_undo(settings, args.run_id, dry_run=args.dry_run, expect_plan=args.expect_plan, trigger={"via": "cli"}))
