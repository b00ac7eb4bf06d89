"""``safesync staging clone [--dry-run]``; a terminal shows the phases,
tables copied and bytes streamed (not with ``--json``)."""

from __future__ import annotations

import argparse

from safesync.shared.config import Settings
from safesync.shared.progress import terminal
from safesync.shared.runner import Answer

from .jobs import clone


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("staging", parents=[parent], help="staging: exact, atomic clone of dev")
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("clone", parents=[parent], help="replace staging's schemas with dev's (safety backup first)")
    p.add_argument("--dry-run", action="store_true", help="plan and show differences; change nothing")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace, settings: Settings) -> Answer:
    """On a terminal: phases, tables copied, bytes streamed."""
    with terminal("staging clone", quiet=args.json) as meter:
        return clone(settings, dry_run=args.dry_run, progress=meter)
