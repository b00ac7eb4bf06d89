"""Placeholders for documented jobs whose issue has not landed yet: their
HTTP target answers 501 and their CLI commands exit 1 with one line."""

from __future__ import annotations

import argparse
from typing import Callable

from safesync.shared.errors import NotBuilt
from safesync.shared.http import Call


def pending(job: str, command: str, actions: list[str]) -> tuple[Callable, Callable]:
    def handle_http(call: Call):
        raise NotBuilt(f"{job} is not built yet")

    def run(args: argparse.Namespace, settings) -> None:
        raise NotBuilt(f"safesync {command} is not built yet")

    def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
        group = sub.add_parser(command, help=f"{job} (not built yet)", parents=[parent])
        group.set_defaults(func=run)
        if not actions:
            return
        actions_sub = group.add_subparsers(dest="action", metavar="ACTION")
        actions_sub.required = True
        for action in actions:
            actions_sub.add_parser(action, parents=[parent]).set_defaults(func=run)

    return handle_http, register_cli
