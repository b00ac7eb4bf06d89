"""``safesync demo`` (what ``make demo`` runs): the whole story on an
embedded PostgreSQL, in a minute, with nothing to configure.

It creates a dev and a prod database of a small learning platform — dev has
new and edited lessons and prices, prod has real users with progress,
payments and streaks — then runs what a team would run before and after a
content push: backup → compare → dry-run → sync, then a prod hotfix that the
next sync refuses to overwrite, validate, and a restore drill of the backup. Each step prints its report; the last lines
prove the users' data is byte-for-byte what it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from safesync.shared.report import Answer

DEMO_DIR = Path(".safesync-demo")
DEMO = {"via": "demo"}


def _config(lms_content: list[str], lms_protected: list[str]) -> str:
    quoted = lambda names: ", ".join(f'"{n}"' for n in names)  # noqa: E731
    return f"""\
[databases]
dev = "DEV_DATABASE_URL"
prod = "PROD_DATABASE_URL"

[storage]
url = "file://./backups"

[backup]
databases = ["prod"]

[content_sync]
source = "dev"
target = "prod"
tables = [{quoted(lms_content)}]
protected = [{quoted(lms_protected)}]

[validate]
database = "prod"

[[validate.rules]]
name = "current streak never exceeds longest"
database = "prod"
sql = "select user_id, current_streak, longest_streak from user_streaks where current_streak > longest_streak"

[[validate.rules]]
name = "no progress on a lesson that does not exist"
database = "prod"
sql = "select lp.* from lesson_progress lp left join lessons l on l.id = lp.lesson_id where l.id is null"
"""


class Narrator:
    """Prints the story: a step title, then the step's report."""

    def __init__(self, as_json: bool) -> None:
        from rich.console import Console

        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True, stderr=as_json)
        self.steps: list[dict] = []

    def say(self, text: str) -> None:
        self.console.print(text)

    def step(self, number: int, title: str, why: str, answer: Answer) -> Answer:
        from safesync.functions.cli import render

        self.console.rule(f"[bold]{number}. {title}")
        self.console.print(f"[dim]{why}[/]")
        if not self.as_json:
            render(answer, False)
        self.steps.append({"step": title, "status": answer.status, "body": answer.body})
        return answer


def run_demo(as_json: bool = False, keep: bool = False) -> Answer:
    from safesync.functions import content_sync, validate
    from safesync.functions.backup import run_create, run_verify
    from safesync.shared.config import load_settings
    from safesync.shared.db import connect, database_fingerprint
    from safesync.shared.embedded import EmbeddedPostgres

    from rich.markup import escape

    from .lms import LMS_CONTENT, LMS_PROTECTED, create_lms

    talk = Narrator(as_json)
    root = DEMO_DIR.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    talk.say(f"[bold]safesync demo[/] — everything lives in {escape(str(root))} (removed at the next run)")
    talk.say("Starting an embedded PostgreSQL 16 …")
    server = EmbeddedPostgres(root / "pg").start()
    try:
        with connect(server.url(), autocommit=True) as conn:
            conn.execute("create database dev")
            conn.execute("create database prod")
        os.environ["DEV_DATABASE_URL"] = server.url("dev")
        os.environ["PROD_DATABASE_URL"] = server.url("prod")
        os.environ.setdefault("PG_BIN", str(server.bin))
        create_lms(server.url("dev"), variant="dev")
        create_lms(server.url("prod"), variant="prod")
        (root / "safesync.toml").write_text(_config(LMS_CONTENT, LMS_PROTECTED))
        settings = load_settings(root / "safesync.toml")
        talk.say(
            "dev: a learning platform where the team edited lessons and prices and added a course;\n"
            "prod: the same content plus real users — enrollments, lesson progress, payments, streaks, points.\n"
        )
        with connect(server.url("prod")) as conn:
            users_before = {k: v for k, v in database_fingerprint(conn).items() if k.split(".")[-1] in LMS_PROTECTED}

        steps = [
            ("Back up prod", "A logical backup streamed to storage, SHA-256 checked; the manifest is written last.",
             lambda: run_create(settings, "prod", "manual", trigger=DEMO)),
            ("Compare dev with prod", "Hashes computed in SQL on both sides; only ranges that differ are examined.\n"
             "This is the first sync, so prod has no ledger of what safesync wrote yet: the differences\n"
             "are reviewed and adopted explicitly (--adopt); from now on a prod edit is never overwritten.",
             lambda: content_sync.content_sync(settings, "compare", adopt=True)),
            ("Dry-run the sync", "The real sync, ending in ROLLBACK: what would be written, and the protection proof.",
             lambda: content_sync.content_sync(settings, "dry-run", adopt=True)),
            ("Sync content dev → prod", "Safety backup first, then one transaction; it commits only if no protected table was touched.",
             lambda: content_sync.content_sync(settings, "sync", adopt=True)),
            ("A hotfix in prod, an edit in dev: conflict", "Someone fixed lesson 1's title directly in prod; dev edited it too.\n"
             "The ledger knows prod changed since the last sync, so the sync refuses rather than overwrite the hotfix.",
             lambda: _conflict(server, settings, content_sync)),
            ("Validate prod", "Row counts, FK orphans, keys, sequences and the team's own SQL rules.",
             lambda: validate.validate(settings, "prod")),
            ("Verify the first backup with a restore drill", "Re-read and re-hash it, restore it into a scratch database, compare row counts.",
             lambda: run_verify(settings, first_backup(settings), restore_drill=True, trigger=DEMO)),
        ]
        results = [talk.step(i, title, why, fn()) for i, (title, why, fn) in enumerate(steps, 1)]

        with connect(server.url("prod")) as conn:
            users_after = {k: v for k, v in database_fingerprint(conn).items() if k.split(".")[-1] in LMS_PROTECTED}
        untouched = users_before == users_after
        talk.console.rule("[bold]Result")
        for table in sorted(users_before):
            mark = "[green]✓[/]" if users_before[table] == users_after.get(table) else "[red]✗[/]"
            talk.say(f"{mark} {table}: {users_after.get(table, (0,))[0]} rows, checksum {'unchanged' if users_before[table] == users_after.get(table) else 'CHANGED'}")
        talk.say(f"Backups and run reports: {escape(settings.storage.describe())}")
        conflict_at = next(i for i, (title, _, _) in enumerate(steps) if title.startswith("A hotfix"))
        # Every step succeeds except the conflict, which must be refused.
        ok = untouched and results[conflict_at].status == 422 and all(
            r.exit_code == 0 for i, r in enumerate(results) if i != conflict_at
        )
        summary = (
            "content synced, the prod hotfix protected, every user table byte-for-byte unchanged"
            if ok
            else "the demo found a problem (see above)"
        )
        talk.say(("[bold green]" if ok else "[bold red]") + summary + "[/]")
        body = {"ok": ok, "summary": summary, "user_tables_unchanged": untouched, "steps": talk.steps, "storage": settings.storage.describe()}
        return Answer(200 if ok else 503, body, 0 if ok else 1)
    finally:
        if not keep:
            server.stop()


def _conflict(server, settings, content_sync) -> Answer:
    from safesync.shared.db import connect

    with connect(server.url("prod"), autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' (hotfix in prod)' where id = 1")
    with connect(server.url("dev"), autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' (edited in dev)' where id = 1")
    return content_sync.content_sync(settings, "sync")


def first_backup(settings) -> str:
    """The demo's own first backup (the newest is the sync's safety backup)."""
    from safesync.functions.backup import list_backups

    return list_backups(settings, "prod")[-1].id


def _cli(args: argparse.Namespace, settings) -> Answer:
    answer = run_demo(as_json=args.json, keep=args.keep)
    if args.json:
        return answer
    sys.stdout.flush()
    return Answer(answer.status, {}, answer.exit_code) if answer.exit_code == 0 else answer


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", help="the whole story on an embedded PostgreSQL (what `make demo` runs)", parents=[parent])
    p.add_argument("--keep", action="store_true", help="leave the embedded server running afterwards")
    p.set_defaults(func=_cli, needs_settings=False)
