"""The presync backup: an undo point of the target beside the undo log,
chosen by ``content_sync.presync_backup``.

- ``full`` (default): the whole target, by the backup job (streamed,
  checksummed, listed by ``safesync backup list``, restorable with
  ``safesync backup restore``). It starts when the sync starts, on its own
  connection and exported snapshot, and runs while the sync plans,
  compares and writes; the sync waits for it only before COMMIT, and does
  not commit unless it completed. A run that ends without writing cancels
  it (a dump that already finished stays, a complete backup).
- ``content``: only the content tables and the ledger — the only relations
  a sync may write — taken the same way.
- ``none``: no backup; the undo log is the only way back (refused when
  ``undo_log`` is off: config validation).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from safesync.functions.backup import undo_point
from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect
from safesync.shared.errors import JobFailed, SafesyncError
from safesync.shared.report import Report

from .ledger import LEDGER


class _Cancelled(Exception):
    """Raised from the dump's progress callback: storage aborts the upload."""


class PresyncBackup:
    """One presync backup running beside the sync (``start``, then ``wait``
    before COMMIT or ``cancel``)."""

    def __init__(self, settings: Settings, db: str, report: Report, trigger: dict[str, Any] | None, content: Sequence[TableRef]) -> None:
        self.settings, self.db, self.report, self.trigger = settings, db, report, trigger
        self.mode = settings.config.content_sync.presync_backup
        self.content = list(content)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._seconds = 0.0

    def start(self) -> None:
        if self.mode == "none":
            return
        self._thread = threading.Thread(target=self._run, name="presync-backup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        began = time.perf_counter()

        def progress(_bytes: int) -> None:
            if self._cancel.is_set():
                raise _Cancelled()

        try:
            tables = None
            if self.mode == "content":
                tables = [*self.content, *([LEDGER] if self._ledger_exists() else [])]
            point = undo_point(self.settings, self.db, "presync", trigger=self.trigger, report=self.report, progress=progress, tables=tables)
            self._result = {"id": point.id, "kind": point.kind, "scope": self.mode, "bytes": point.size}
        except BaseException as exc:  # noqa: BLE001 — reported by wait()
            self._error = exc
        finally:
            self._seconds = time.perf_counter() - began

    def _ledger_exists(self) -> bool:
        with connect(self.settings.database_url(self.db), autocommit=True, application_name="safesync-backup") as conn:
            return conn.execute("select to_regclass('safesync.content_ledger') is not null").fetchone()[0]

    def wait(self) -> dict[str, Any]:
        """The backup, once complete (what the report says); raises when it
        failed: then the sync must not commit."""
        if self._thread is None:
            return {"kind": "none", "scope": "none", "note": "presync_backup = \"none\": the undo log is the only way back"}
        self._thread.join()
        self.report.timings["safety_backup_s"] = round(self._seconds, 3)
        if self._error is not None:
            error = self._error
            if isinstance(error, SafesyncError):  # keeps its status: a pg_dump too old is a config error, not a retry
                raise type(error)(f"sync rolled back, nothing changed: the presync backup failed: {error.message}", error.detail) from None
            raise JobFailed(f"sync rolled back, nothing changed: the presync backup failed: {error}") from None
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Stop a backup the run no longer needs (nothing was written)."""
        if self._thread is not None:
            self._cancel.set()
            self._thread.join()
