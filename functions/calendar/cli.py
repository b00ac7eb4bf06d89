"""``safesync calendar sync --mode incremental|full|cleanup [--calendar ID]
[--force] [--retry-failed]``, ``calendar status``, ``calendar events
--from --to``, ``calendar watch``."""

from __future__ import annotations

import argparse

from .jobs import events_answer, status_answer
from .sync import MODES, run_sync
from .watch import watch


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("calendar", help="two-way Google Calendar sync", parents=[parent])
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("sync", help="pull from Google, then push pending local changes", parents=[parent])
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--calendar", help="only this configured calendar id")
    p.add_argument("--force", action="store_true", help="lift the empty-listing / mass-deletion guards")
    p.add_argument("--retry-failed", action="store_true", help="give sync_failed rows fresh tries first")
    p.set_defaults(
        func=lambda args, settings: run_sync(
            settings, args.mode, force=args.force, calendar_id=args.calendar, reset_failed=args.retry_failed
        )
    )

    p = actions.add_parser("status", help="health, last success per mode, pending and failed events", parents=[parent])
    p.set_defaults(func=lambda args, settings: status_answer(settings))

    p = actions.add_parser("events", help="events in a window (YYYY-MM-DD or RFC 3339 bounds)", parents=[parent])
    p.add_argument("--from", dest="from_", required=True)
    p.add_argument("--to", required=True)
    p.set_defaults(func=lambda args, settings: events_answer(settings, args.from_, args.to))

    p = actions.add_parser("watch", help="open/renew Google push channels, stop old ones", parents=[parent])
    p.set_defaults(func=lambda args, settings: watch(settings))
