"""``safesync content compare | dry-run | sync [--adopt] [--expect-plan
DIGEST]`` and ``safesync content undo RUN_ID [--dry-run] [--expect-plan
DIGEST]``. A terminal shows tables compared and written, rows and bytes
copied (not with ``--json``).
"""

from __future__ import annotations

import argparse

from safesync.shared.config import Settings
from safesync.shared.progress import terminal
from safesync.shared.report import Answer

from .job import MODES
from .jobs import content_sync, content_undo


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
