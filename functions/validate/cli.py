"""``safesync validate [--db NAME] [--against NAME]``."""

from __future__ import annotations

import argparse

from .jobs import validate


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", parents=[parent], help="integrity checks on one database, or diff two (--against)")
    p.add_argument("--db", metavar="NAME", help="database to check (default: validate.database or the content-sync target)")
    p.add_argument("--against", metavar="NAME", help="compare schema and data with this database instead")
    p.set_defaults(func=lambda args, settings: validate(settings, args.db, args.against))
