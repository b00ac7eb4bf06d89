"""``safesync status [--link [--url URL]]``."""

from __future__ import annotations

import argparse

from safesync.shared.config import Settings
from safesync.shared.report import Answer

from .jobs import page_url, status, status_link


def _cli(args: argparse.Namespace, settings: Settings) -> Answer:
    if args.link:
        return status_link(page_url(args.url))
    return status(settings)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", help="is all well? last backups, last runs, calendar health, storage", parents=[parent])
    p.add_argument("--link", action="store_true", help="print a one-time link (10 min) that opens the status page in a browser")
    p.add_argument("--url", help="the status page's URL (default: $SAFESYNC_STATUS_BASE_URL or $SAFESYNC_PUBLIC_URL, + /status)")
    p.set_defaults(func=_cli)
