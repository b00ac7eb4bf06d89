"""``undo_point``: the backup another job takes before it writes — content
sync's ``presync``, migrate's ``premigrate``, the staging clone's and a
restore's ``safety`` — as one call with one answer, so no job needs to know
what a ``BackupInfo`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from safesync.shared.config import Settings
from safesync.shared.db import TableRef
from safesync.shared.report import Report

from .create import create_backup
from .pgproc import Progress


@dataclass(frozen=True)
class UndoPoint:
    """A complete backup to restore when the job's write must be undone."""

    id: str
    kind: str
    dump_key: str
    size: int  # bytes stored

    def ref(self) -> dict[str, str]:
        """Where it is, as a report names it."""
        return {"id": self.id, "dump_key": self.dump_key}


def undo_point(
    settings: Settings,
    db: str,
    kind: str,
    *,
    trigger: dict[str, Any] | None,
    report: Report | None = None,
    progress: Progress | None = None,
    tables: Sequence[TableRef] | None = None,
) -> UndoPoint:
    """Back up ``db`` (all of it, or only ``tables``) as a ``kind`` backup,
    inside the caller's run: no lock is taken. Raises as ``create_backup``
    does; nothing is listed unless it completed."""
    info = create_backup(settings, db, kind, trigger=trigger, report=report, progress=progress, tables=tables)
    return UndoPoint(info.id, info.kind, info.dump_key, info.size)
