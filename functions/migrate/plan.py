"""What a migration would run, against which database — and its digest.

The plan is read-only: it reads the folder (or the configured command) and
the target's record of applied files. Its ``digest`` names exactly what
would run (the pending files' names and checksums, or the command), so
``apply`` can demand a passing rehearsal of *this* plan, not of an older one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import ConfigError, Refused

from . import sqlfiles
from .sqlfiles import SqlFile


@dataclass
class Plan:
    database: str
    kind: str  # "sql" | "command"
    pending: list[SqlFile] = field(default_factory=list)
    applied: int = 0
    command: str | None = None
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (path, sha256) of command_inputs files
    single_transaction: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to do (a command always runs: it decides for itself)."""
        return self.kind == "sql" and not self.pending

    @property
    def digest(self) -> str:
        what: dict[str, Any] = {"database": self.database, "kind": self.kind}
        if self.kind == "sql":
            what["files"] = [[f.name, f.checksum] for f in self.pending]
            what["single_transaction"] = self.single_transaction
        else:
            what["command"] = self.command
            what["inputs"] = self.inputs
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        if self.kind == "command":
            return f"run `{self.command}` against {self.database}"
        if self.empty:
            return f"{self.database} is up to date ({self.applied} file(s) applied, none pending)"
        how = "in one transaction" if self.single_transaction else "each in its own transaction"
        return f"apply {len(self.pending)} pending file(s) to {self.database} {how} ({self.applied} already applied)"

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"database": self.database, "kind": self.kind, "plan_digest": self.digest}
        if self.kind == "sql":
            out.update(
                pending=[f.name for f in self.pending], applied=self.applied, single_transaction=self.single_transaction
            )
        else:
            out.update(command=self.command, input_files=len(self.inputs))
        return out

    def rows(self) -> list[dict[str, Any]]:
        if self.kind == "command":
            return [{"step": "command", "what": self.command, "env": "DATABASE_URL = " + self.database}]
        return [{"step": i, "file": f.name, "sha256": f.checksum[:12]} for i, f in enumerate(self.pending, 1)]


def build_plan(settings: Settings, conn: psycopg.Connection | None = None) -> Plan:
    """The plan for ``[migrate]`` against its database (``conn``: an open
    connection to it, else one is opened). Raises ConfigError for a missing
    setup, Refused when the folder contradicts what was applied."""
    cfg = settings.config.migrate
    db = settings.check_database(cfg.database)
    if not cfg.sql_dir and not cfg.command:
        raise ConfigError("[migrate] needs sql_dir (a folder of .sql files) or command (e.g. \"alembic upgrade head\")")
    if cfg.command:
        return Plan(db, "command", command=cfg.command, inputs=command_inputs(settings))
    files = sqlfiles.discover(settings.resolve_path(cfg.sql_dir))
    if conn is None:
        with connect(settings.database_url(db), application_name="safesync-migrate") as own:
            own.read_only = True
            return _sql_plan(settings, own, db, files)
    return _sql_plan(settings, conn, db, files)


def command_inputs(settings: Settings) -> list[tuple[str, str]]:
    """The files a command migration reads (``command_inputs`` globs, e.g.
    ``prisma/migrations/**/*.sql``), hashed: editing one changes the plan, so
    an older rehearsal no longer counts."""
    base = settings.base_dir
    found: dict[str, str] = {}
    for pattern in settings.config.migrate.command_inputs:
        if Path(pattern).is_absolute():
            raise ConfigError(f"migrate.command_inputs: {pattern!r} must be relative to the config file's folder")
        matches = [p for p in base.glob(pattern) if p.is_file()]
        if not matches:
            raise ConfigError(f"migrate.command_inputs: {pattern!r} matches no file in {base}")
        for path in matches:
            found[path.relative_to(base).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sorted(found.items())


def _same_text(done: dict[str, str], pending: list[SqlFile], present: set[str]) -> dict[str, str]:
    """Pending file → the file (applied, or pending before it) with the same
    text, described. Files are matched by name, so a renamed or copied file
    looks new; blank files (placeholders) do nothing twice."""
    seen = {checksum: f"applied {name}" + ("" if name in present else " (no longer in the folder)") for name, checksum in sorted(done.items())}
    found: dict[str, str] = {}
    for f in pending:
        if f.text.strip() and f.checksum in seen:
            found[f.name] = seen[f.checksum]
        seen.setdefault(f.checksum, f"pending {f.name}")
    return found


def _sql_plan(settings: Settings, conn: psycopg.Connection, db: str, files: list[SqlFile]) -> Plan:
    cfg = settings.config.migrate
    sqlfiles.check_timeouts(conn, cfg.lock_timeout, cfg.statement_timeout)
    done = sqlfiles.applied(conn)
    changed = [f.name for f in files if f.name in done and done[f.name] != f.checksum]
    if changed:
        raise Refused(
            f"refusing: {len(changed)} already-applied migration file(s) changed since they were applied: "
            f"{', '.join(changed)} — add a new file instead of editing an applied one",
            {"changed": changed},
        )
    pending = [f for f in files if f.name not in done]
    present = {f.name for f in files}
    twice = _same_text(done, pending, present)
    if twice:  # renumbered after a merge, or a copy ("0002_raise copy.sql"): its text would run a second time
        raise Refused(
            "refusing: pending file(s) have the exact text of another migration file, which would run a second time: "
            + "; ".join(f"{new} = {old}" for new, old in twice.items())
            + " — give a renamed file its applied name back and delete copies (or, if the text must run again, change it)",
            {"same_text": twice},
        )
    for key, finder, why in (
        ("transaction_control", sqlfiles.transaction_control,
         "contain transaction control; safesync runs each file in its own transaction (or all in one), remove BEGIN/COMMIT/ROLLBACK"),
        ("client_copy", sqlfiles.client_copy,
         "use COPY with the client's STDIN/STDOUT, which only psql can feed; safesync sends a file as SQL — use INSERT … VALUES, or a command migration"),
    ):
        found = {f.name: hits for f in pending if (hits := finder(f.text))}
        if found:
            raise Refused(
                f"refusing: migration file(s) {why}: " + "; ".join(f"{name} ({', '.join(hits)})" for name, hits in found.items()),
                {key: found},
            )
    plan = Plan(db, "sql", pending=pending, applied=len(done), single_transaction=cfg.single_transaction)
    missing = sorted(set(done) - present)
    if missing:
        plan.warnings.append(f"applied file(s) no longer in {cfg.sql_dir}: {', '.join(missing)}")
    latest = max(done, default=None)
    early = [f.name for f in pending if latest is not None and f.name < latest]
    if early:
        plan.warnings.append(
            f"pending file(s) sort before the last applied one ({latest}): {', '.join(early)} — they will run after it"
        )
    return plan
