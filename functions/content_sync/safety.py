"""The undo point taken before a sync writes anything: a full ``presync``
backup of the target by the backup job (streamed, checksummed, listed by
``safesync backup list``, restorable with ``safesync backup restore``).
Nothing is written to the target unless the backup completed."""

from __future__ import annotations

from typing import Any

from safesync.functions.backup import create_backup
from safesync.shared.config import Settings
from safesync.shared.report import Report


def take_safety_backup(settings: Settings, db: str, report: Report, trigger: dict[str, Any] | None) -> dict[str, Any]:
    info = create_backup(settings, db, "presync", trigger=trigger, report=report)
    return {"id": info.id, "kind": "presync", "bytes": info.size}
