"""Stored run records: ``runs/<job>/<stamp>-<run_id>.json``.

The one owner of that layout: the runner writes a record per run; status,
migrate's rehearsal check and anything that looks a run up by id read them
here. Names sort by start second, so "newest" is a reversed listing; other
files a job keeps beside its records (e.g. content sync's undo logs) are
not records and never listed as such.

Beside the records, ``runs/.last/<job>/<action>.json`` holds the outcome of
the newest run of each job and action (overwritten by every run): what the
status page judges. The newest record of a job alone hid a failed sync
behind the compare run after it, however long ago that sync had failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import groupby
from typing import Any, Iterator

from .config import Settings
from .log import redact_obj
from .report import Report, stamp

SUFFIX = ".json"
LAST = "runs/.last"
LAST_FIELDS = ("job", "action", "status", "summary", "run_id", "started_at", "finished_at")
_ACTION = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # fullmatch: an action is a name of ours, never a path


def key(report: Report) -> str:
    """Where ``report``'s record is stored."""
    return f"runs/{report.job}/{stamp(report.started_at)}-{report.run_id}{SUFFIX}"


def store(settings: Settings, report: Report) -> None:
    """Store ``report`` (redacted: a stored run leaves the process), then
    its outcome as the last run of its job and action. Two runs of one job
    and action finishing in the same moment may leave the older's outcome:
    the jobs that write hold a lock, so only read-only runs can race."""
    record = redact_obj(report.to_dict())
    settings.storage.put_json(key(report), record)
    if _ACTION.fullmatch(report.action):
        settings.storage.put_json(last_key(report.job, report.action), {**{f: record.get(f) for f in LAST_FIELDS}, "key": key(report)})


def last_key(job: str, action: str) -> str:
    return f"{LAST}/{job}/{action}{SUFFIX}"


def last_of_each_action(settings: Settings, job: str) -> list[dict[str, Any]]:
    """The outcome of the newest run of each action of ``job`` (``LAST_FIELDS``
    and the record's ``key``); runs stored before these outcomes were kept
    are not among them (``newest_first`` finds those)."""
    found = [settings.storage.get_json(info.key) for info in settings.storage.list(f"{LAST}/{job}/") if info.key.endswith(SUFFIX)]
    return [o for o in found if isinstance(o, dict)]


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
