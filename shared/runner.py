"""Running a job the same way from HTTP and from the CLI.

``execute`` wraps a job function with everything every run needs: the
per-target advisory lock, de-duplication of deliveries (``shared.delivery``),
a storage check before any
database is touched, the report stored under ``runs/``, and a notification
when the run fails or is refused. Errors we understand become the report's
``error``; so does an error the database stopped a run with (its SQLSTATE
says whether retrying can help: ``shared.pgerrors``); anything else is our
bug: logged with its traceback, answered 500 without one.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable

import psycopg

from . import notify, runs
from .config import Settings
from .db import connect
from .errors import SafesyncError, StorageError
from .delivery import Delivery
from .locks import JobLock, begin_delivery, ensure_schema, finish_delivery, stored_delivery
from .log import get_logger, redact, run_id_var
from .pgerrors import database_failure
from .report import Answer, Report

log = get_logger("runner")

JobFn = Callable[[Report], Report | None]


def check_storage(settings: Settings, run_id: str) -> None:
    """Fail early — before touching a database — when storage cannot take
    this run's report (or its backups): write and delete a probe object."""
    try:
        settings.storage.probe(f"runs/.probe/{run_id}")
    except SafesyncError as exc:
        raise StorageError(f"storage {settings.storage.describe()} is not writable: {redact(exc.message)}") from None
    except Exception as exc:
        raise StorageError(f"storage {settings.storage.describe()} is unavailable: {redact(str(exc))}") from None


def _store(settings: Settings, report: Report) -> None:
    try:
        runs.store(settings, report)
    except Exception as exc:  # the run itself already happened; say so, don't mask it
        report.warnings.append(f"run report not stored: {redact(str(exc))}")
        log.warning("run report not stored", error=redact(str(exc)))


def execute(
    settings: Settings,
    report: Report,
    fn: JobFn,
    *,
    target: str | None = None,
    delivery: Delivery | None = None,
    needs_storage: bool = True,
    record: bool = True,
) -> Answer:
    """Run ``fn(report)`` under the lock for ``report.job`` on database
    ``target`` (None: no lock, e.g. read-only actions).

    Returns the HTTP status and JSON body. A ``delivery`` already answered
    for good — a success or a permanent failure — (the same signed request,
    or a QStash retry of the same message) returns the stored answer without
    running anything, while one that failed retryably runs again; its record lives in the
    target database, so read-only actions without one are answered afresh.
    Raises AlreadyRunning (409) when another run holds the lock.
    """
    token = run_id_var.set(report.run_id)
    try:
        with ExitStack() as stack:
            url = settings.database_url(target) if target else None
            meta = None
            if url and delivery:
                meta = stack.enter_context(connect(url, autocommit=True, application_name="safesync-deliveries"))
                ensure_schema(meta)
                replay = stored_delivery(meta, delivery, report.job, target)
                if replay:
                    return _replayed(*replay)
            if url:
                lock = JobLock(url, report.job, target).acquire()
                stack.callback(lock.release)
                if meta is not None:
                    replay = stored_delivery(meta, delivery, report.job, target)  # finished while we waited for the lock
                    if replay:
                        return _replayed(*replay)
                    begin_delivery(meta, delivery, report.job, target)
            storage_ok = _run(settings, report, fn, needs_storage)
            if record and storage_ok:
                _store(settings, report)
            elif record:
                report.warnings.append("run report not stored: storage is unavailable")
            answer = Answer.of(report)
            if meta is not None:
                finish_delivery(meta, delivery, report.job, target, answer.status, {**answer.body, "_permanent": answer.permanent})
            if report.status in ("failed", "refused"):
                notify.report_failed(report.to_dict())
            return answer
    finally:
        run_id_var.reset(token)


def _replayed(status: int, stored: dict[str, Any]) -> Answer:
    """The first run's answer to a delivery that came again."""
    body = {k: v for k, v in stored.items() if k != "_permanent"}
    return Answer(status, {**body, "replayed": True}, 0 if status < 300 else 1, bool(stored.get("_permanent")))


def _run(settings: Settings, report: Report, fn: JobFn, needs_storage: bool) -> bool:
    """Run ``fn``; False when the storage check failed (then nothing else ran
    and storing the report would only wait for the same dead store)."""
    log.info("run started", job=report.job, action=report.action)
    storage_ok = True
    try:
        if needs_storage:
            try:
                check_storage(settings, report.run_id)
            except StorageError:
                storage_ok = False
                raise
        fn(report)
    except SafesyncError as exc:
        _failed(report, exc)
    except psycopg.Error as exc:  # the database stopped the run: its words, not "internal error"
        log.exception("run stopped by a database error", job=report.job, action=report.action)
        _failed(report, database_failure(f"{report.job} {report.action} stopped by the database", exc))
    except Exception:
        log.exception("run crashed", job=report.job, action=report.action)
        report.status = "failed"
        report.summary = "internal error (see logs for run " + report.run_id + ")"
        report.error = {
            "error": "internal error",
            "detail": {"run_id": report.run_id},
            "status": 500,
            "permanent": False,
            "exit_code": 1,
        }
    finally:
        report.finish()
    log.info("run finished", job=report.job, action=report.action, status=report.status, summary=report.summary)
    return storage_ok


def _failed(report: Report, exc: SafesyncError) -> None:
    report.status = "refused" if exc.status in (400, 403, 404, 422) else "failed"
    report.summary = report.summary or exc.message
    report.error = {
        "error": exc.message,
        "detail": exc.detail,
        "status": exc.status,
        "permanent": exc.permanent,
        "exit_code": exc.exit_code,
    }
