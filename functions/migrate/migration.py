"""Running a plan against one database (the target, or the rehearsal clone).

SQL files: each in its own transaction (file + record row commit together),
or all in one transaction with ``single_transaction`` — then ``check`` (the
validation) runs inside that transaction, on its uncommitted state, and a
failure anywhere ends in ROLLBACK: nothing was ever committed. Every
file starts with ``lock_timeout`` and ``statement_timeout`` set and none of
the session state an earlier file left (``sqlfiles.reset_session``).

A command runs to its end; whatever it did is committed (we cannot know),
so undoing it is the caller's restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.log import get_logger, redact

from . import sqlfiles
from .command import CommandResult, command_env, run_command
from .plan import Plan
from .validation import Validation

log = get_logger("migrate")

Check = Callable[[psycopg.Connection], Validation]


@dataclass
class Outcome:
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    failed_file: str | None = None
    committed: bool = False  # something reached the database for good (undo = restore)
    rolled_back: bool = False  # undone by ROLLBACK
    validation: Validation | None = None
    command: CommandResult | None = None

    @property
    def migrated(self) -> bool:
        return self.error is None

    @property
    def ok(self) -> bool:
        return self.error is None and (self.validation is None or self.validation.ok)

    def problem(self) -> str:
        if self.error:
            return self.error
        return self.validation.summary() if self.validation else ""


# A failed file that ended safesync's transaction itself (or broke the
# connection, so nobody can tell): what ran before its COMMIT may be in the
# database, so only a restore undoes it.
PART_COMMITTED = "failed (its transaction ended outside safesync: may be partly committed)"


class _ValidationFailed(Exception):
    pass


def run(settings: Settings, plan: Plan, url: str, *, run_id: str, check: Check | None = None) -> Outcome:
    """Run ``plan`` against ``url``. ``check`` is used only inside a single
    SQL transaction (elsewhere the caller validates after)."""
    if plan.kind == "command":
        return _run_command(settings, plan, url)
    if plan.single_transaction:
        return _run_single(settings, plan, url, run_id, check)
    return _run_each(settings, plan, url, run_id)


def _begin(conn: psycopg.Connection, settings: Settings) -> None:
    cfg = settings.config.migrate
    sqlfiles.set_timeouts(conn, cfg.lock_timeout, cfg.statement_timeout)
    sqlfiles.ensure_records(conn)


def _db_error(exc: psycopg.Error) -> str:
    return redact((exc.diag.message_primary or str(exc)).strip())


def _run_each(settings: Settings, plan: Plan, url: str, run_id: str) -> Outcome:
    out = Outcome()
    with connect(url, autocommit=True, application_name="safesync-migrate") as conn:
        for i, file in enumerate(plan.pending):
            status = "failed (rolled back)"
            try:
                with conn.transaction():
                    _begin(conn, settings)
                    ms = sqlfiles.apply_file(conn, file, run_id)
            except sqlfiles.FileFailed as exc:
                out.error, out.failed_file = str(exc.error), file.name
                if sqlfiles.committed_anyway(conn, exc):  # its own COMMIT: part of it is in the database
                    out.committed, status = True, PART_COMMITTED
            except psycopg.Error as exc:  # bookkeeping, or COMMIT (deferred constraints)
                out.error, out.failed_file = f"{file.name}: {_db_error(exc)}", file.name
            if out.error:
                out.steps.append({"file": file.name, "status": status, "ms": None, "error": out.error})
                out.steps += [{"file": f.name, "status": "not run"} for f in plan.pending[i + 1 :]]
                break
            out.committed = True
            out.steps.append({"file": file.name, "status": "applied", "ms": ms})
            log.info("migration file applied", file=file.name, ms=ms)
    return out


def _run_single(settings: Settings, plan: Plan, url: str, run_id: str, check: Check | None) -> Outcome:
    out = Outcome()
    done: list[tuple[str, int]] = []
    partial = False
    with connect(url, autocommit=True, application_name="safesync-migrate") as conn:
        current = None
        try:
            with conn.transaction():
                for file in plan.pending:
                    _begin(conn, settings)  # again after each file: it ended with its session reset
                    current = file
                    done.append((file.name, sqlfiles.apply_file(conn, file, run_id)))
                current = None
                if check is not None:
                    out.validation = check(conn)
                    if not out.validation.ok:
                        raise _ValidationFailed()
            out.committed = True
        except sqlfiles.FileFailed as exc:
            out.error, out.failed_file = str(exc.error), current.name if current else None
            # its own COMMIT committed the files before it too: the ROLLBACK cannot undo them
            partial = sqlfiles.committed_anyway(conn, exc)
        except psycopg.Error as exc:
            where = f"{current.name}: " if current else "at COMMIT: " if len(done) == len(plan.pending) else "before the first file: "
            out.error, out.failed_file = where + _db_error(exc), current.name if current else None
        except _ValidationFailed:
            pass
    out.rolled_back = not out.committed and not partial
    for name, ms in done:
        status = "applied" if out.committed else "committed by the failed file's COMMIT" if partial else "rolled back"
        out.steps.append({"file": name, "status": status, "ms": ms})
    if out.failed_file:
        out.steps.append({"file": out.failed_file, "status": PART_COMMITTED if partial else "failed", "error": out.error})
    out.committed = out.committed or partial
    seen = {s["file"] for s in out.steps}
    out.steps += [{"file": f.name, "status": "not run"} for f in plan.pending if f.name not in seen]
    return out


def _run_command(settings: Settings, plan: Plan, url: str) -> Outcome:
    cfg = settings.config.migrate
    env = command_env(url, list(settings.config.databases.values()), cfg.lock_timeout, cfg.statement_timeout, settings.env)
    result = run_command(plan.command or "", url, cwd=settings.base_dir, env=env, timeout_s=cfg.command_timeout_minutes * 60)
    out = Outcome(committed=True, command=result)
    out.steps.append({"step": "command", "status": "ok" if result.ok else "failed", "exit_code": result.exit_code, "s": result.duration_s})
    if not result.ok:
        out.error = result.error()
    return out
