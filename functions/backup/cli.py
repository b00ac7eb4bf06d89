"""``safesync backup create|list|verify|restore|prune``.

Create and restore show a live byte counter on a terminal (not with
``--json`` or when stdout is piped: scripts get one clean report).
"""

from __future__ import annotations

import argparse
import getpass
from contextlib import contextmanager
from typing import Any, Iterator

from safesync.shared.config import Settings
from safesync.shared.progress import terminal
from safesync.shared.report import Answer

from .jobs import run_create, run_list, run_prune, run_restore, run_verify
from .pgproc import Progress


def _trigger(args: argparse.Namespace) -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return {"via": "cli", "user": user}


@contextmanager
def _progress(args: argparse.Namespace, label: str) -> Iterator[Progress | None]:
    with terminal(label, quiet=getattr(args, "json", False)) as meter:
        yield (lambda done: meter(bytes=done)) if meter else None


def _create(args: argparse.Namespace, settings: Settings) -> Answer:
    with _progress(args, f"backing up {args.db}") as progress:
        return run_create(settings, args.db, args.kind, trigger=_trigger(args), deployment=args.deployment, progress=progress)


def _verify(args: argparse.Namespace, settings: Settings) -> Answer:
    return run_verify(settings, args.id, all_backups=args.all, restore_drill=args.restore_drill, trigger=_trigger(args))


def _restore(args: argparse.Namespace, settings: Settings) -> Answer:
    with _progress(args, f"restoring into {args.to}") as progress:
        return run_restore(
            settings, args.id, db=args.db, to=args.to, confirm=args.confirm, trigger=_trigger(args), progress=progress,
            no_owner=args.no_owner,
        )


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    backup = sub.add_parser("backup", parents=[parent], help="backups: create, list, verify, restore, prune")
    actions = backup.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("create", parents=[parent], help="back up a database now")
    p.add_argument("--db", required=True, metavar="NAME", help="database name from [databases]")
    p.add_argument("--kind", choices=("manual", "daily", "predeploy"), default="manual",
                   help="manual (default), daily (for cron users) or predeploy")
    p.add_argument("--deployment", metavar="ID", help="tag a predeploy backup with this deployment")
    p.set_defaults(func=_create)

    p = actions.add_parser("list", parents=[parent], help="complete backups, newest first")
    p.add_argument("--db", metavar="NAME", help="only this database")
    p.set_defaults(func=lambda args, settings: run_list(settings, args.db))

    p = actions.add_parser("verify", parents=[parent],
                           help="re-check checksums and readability (default: newest backup of each backup database)")
    p.add_argument("id", nargs="?", metavar="ID", help="backup id (see `backup list`)")
    p.add_argument("--all", action="store_true", help="verify every complete backup")
    p.add_argument("--restore-drill", action="store_true",
                   help="also restore into a scratch database and compare row counts")
    p.set_defaults(func=_verify)

    p = actions.add_parser("restore", parents=[parent], help="restore a backup into a database (safety backup first)")
    p.add_argument("id", metavar="ID|latest", help="backup id, or 'latest' of --db")
    p.add_argument("--db", metavar="NAME", help="the backed-up database (needed with 'latest')")
    p.add_argument("--to", required=True, metavar="NAME", help="target database name from [databases]")
    p.add_argument("--confirm", metavar="NAME", help="the target's name again: required for protected targets")
    p.add_argument("--no-owner", action="store_true",
                   help="restore every object owned by the restoring role (when it may not assign the backup's owners)")
    p.set_defaults(func=_restore)

    p = actions.add_parser("prune", parents=[parent], help="apply the retention policy, remove leftovers")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument("--db", metavar="NAME", help="only this database")
    p.set_defaults(func=lambda args, settings: run_prune(settings, args.db, dry_run=args.dry_run, trigger=_trigger(args)))
