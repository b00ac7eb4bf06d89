"""``safesync migrate plan | rehearse | apply [--skip-rehearsal]``."""

from __future__ import annotations

import argparse

from .jobs import apply, plan, rehearse


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
