"""Stored run records: ``runs/<job>/<stamp>-<run_id>.json``.

The one owner of that layout: the runner writes a record per run; status,
migrate's rehearsal check and anything that looks a run up by id read them
here. Names sort by start second, so "newest" is a reversed listing; other
files a job keeps beside its records (e.g. content sync's undo logs) are
not records and never listed as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import groupby
from typing import Any, Iterator

from .config import Settings
from .log import redact_obj
from .report import Report, stamp

SUFFIX = ".json"


def key(report: Report) -> str:
    """Where ``report``'s record is stored."""
    return f"runs/{report.job}/{stamp(report.started_at)}-{report.run_id}{SUFFIX}"


def store(settings: Settings, report: Report) -> None:
    """Store ``report`` (redacted: a stored run leaves the process)."""
    settings.storage.put_json(key(report), redact_obj(report.to_dict()))


@dataclass(frozen=True)
class StoredRun:
    """One record's name, and what the name alone says."""

    key: str
    started: datetime | None  # from the name; None for a name not ours
    run_id: str

    @classmethod
    def from_key(cls, object_key: str) -> StoredRun:
        name = object_key.rsplit("/", 1)[-1].removesuffix(SUFFIX)
        when, _, run_id = name.partition("-")
        try:
            started = datetime.strptime(when, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            started = None
        return cls(object_key, started, run_id)


def listing(settings: Settings, job: str) -> list[StoredRun]:
    """The records of ``job``, oldest first."""
    return [StoredRun.from_key(info.key) for info in settings.storage.list(f"runs/{job}/") if info.key.endswith(SUFFIX)]


def newest_first(settings: Settings, job: str, limit: int) -> Iterator[dict[str, Any]]:
    """Up to ``limit`` stored reports of ``job``, newest first, read lazily
    (callers mostly stop at the first). Names sort by second; runs within
    one second are told apart by their finish time."""
    records = listing(settings, job)[-limit:]
    for _second, same in groupby(reversed(records), key=lambda r: r.started):
        reports = [settings.storage.get_json(r.key) for r in same]
        yield from sorted(reports, key=lambda report: str(report.get("finished_at") or ""), reverse=True)


def find(settings: Settings, job: str, run_id: str) -> dict[str, Any] | None:
    """The stored report of run ``run_id`` of ``job``; None when there is none."""
    for record in reversed(listing(settings, job)):
        if record.run_id == run_id:
            return settings.storage.get_json(record.key)
    return None
