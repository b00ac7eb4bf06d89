"""The one table of what safesync runs: HTTP targets, CLI words, run folders.

``main`` (the functions-framework targets), ``cli`` (its commands),
``serve``, ``schedules`` (which targets a schedule may call) and ``status``
(whose runs it reads) all read this table, and the packaging test checks
every module named here ships. It imports nothing, so the CLI and a cold
HTTP start pay nothing for it and no job's imports can break another's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One job module and the ways it is reached.

    ``module`` is the package under ``safesync.functions``; ``target`` the
    HTTP target (also the Cloud Run service name) and ``handler`` the module
    function that answers it; ``cli`` the command word; ``runs`` the folder
    under ``runs/`` its stored reports go to (the report's ``job``);
    ``summary`` the target's one-line description.
    """

    module: str
    target: str | None = None
    handler: str = "handle_http"
    methods: tuple[str, ...] = ("POST",)
    vercel: bool = False  # Vercel deploy webhooks accepted
    cli: str | None = None
    runs: str | None = None
    summary: str = ""


ENTRIES: tuple[Entry, ...] = (
    Entry("backup", target="backup", vercel=True, cli="backup", runs="backup",
          summary="Backups: create (manual/predeploy, Vercel webhook), list, verify, restore, prune."),
    Entry("content_sync", target="content_sync", cli="content", runs="content_sync",
          summary="Content sync dev → prod: compare, dry-run, sync."),
    Entry("staging_clone", target="staging_clone", cli="staging", runs="staging_clone",
          summary="Exact, atomic clone of dev into staging."),
    Entry("validate", target="validate", cli="validate", runs="validate",
          summary="Integrity checks on one database or between two."),
    Entry("calendar", target="calendar_sync", methods=("GET", "POST"), cli="calendar", runs="calendar",
          summary="Two-way Google Calendar sync, events read API, push notifications."),
    Entry("migrate", target="migrate", cli="migrate", runs="migrate",
          summary="Safe migrations: plan, rehearse on a clone, apply with backup and rollback (admin token)."),
    Entry("calendar", target="calendar_notify", handler="handle_notify_call",
          summary="Google Calendar push notifications (events.watch channels)."),
    Entry("doctor", cli="doctor", runs="doctor"),
    Entry("status", target="status", methods=("GET", "POST"), cli="status",
          summary="Health of everything at a glance: JSON, or a page a person logs in to."),
    Entry("schedules", cli="schedules"),
    Entry("roles", cli="roles"),
    Entry("serve", cli="serve"),
    Entry("demo", cli="demo"),
)

ROUTES: dict[str, Entry] = {e.target: e for e in ENTRIES if e.target}
TARGETS: tuple[str, ...] = tuple(ROUTES)
COMMANDS: dict[str, str] = {e.cli: e.module for e in ENTRIES if e.cli}  # command -> module, in the README's order (--help)
RUN_FOLDERS: tuple[str, ...] = tuple(e.runs for e in ENTRIES if e.runs)
