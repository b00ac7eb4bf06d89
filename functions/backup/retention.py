"""Which backups to keep: a pure function of timestamps, kinds and a policy.

Rules (all of them apply; a backup is kept if ANY rule keeps it):

- ``keep_daily`` / ``keep_weekly`` / ``keep_monthly``: for the N most recent
  UTC days / ISO weeks / calendar months *that have backups*, keep the newest
  backup of that period (borg style: days without backups do not count, so
  a week-long outage never makes the older backups expire). Every kind of
  *full* backup takes part: the newest full backup of a day is that day's
  best copy, whatever made it. A partial backup (only some tables: content
  sync's ``presync_backup = "content"``) is no copy of the database, so it
  never takes a period's place: were it the newest of a day, that day's
  full backup would be deleted in its favour.
- ``keep_predeploy``: the N newest ``predeploy`` backups.
- ``keep_event``: the N newest of EACH event kind (``presync``,
  ``premigrate``, ``safety``) — the undo points of content syncs,
  migrations and restores.
- The newest backup overall, and the newest full backup, are always kept,
  whatever the policy.

The result is idempotent: applying the policy to the kept set keeps all of
it (each rule's chosen backups are still the newest of the same periods).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence

from .layout import EVENT_KINDS


@dataclass(frozen=True)
class Candidate:
    id: str
    at: datetime  # from the manifest (started_at), tz-aware
    kind: str
    partial: bool = False  # only some tables were dumped: counted by its kind only


@dataclass(frozen=True)
class Policy:
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    keep_predeploy: int = 20
    keep_event: int = 10


@dataclass
class RetentionPlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons
    delete: list[str] = field(default_factory=list)  # newest first


def _day(at: datetime) -> str:
    return at.strftime("%Y-%m-%d")


def _week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def _month(at: datetime) -> str:
    return at.strftime("%Y-%m")


PERIODS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
)


def plan_retention(backups: Iterable[Candidate], policy: Policy) -> RetentionPlan:
    """Split ``backups`` (one database's complete backups) into keep/delete."""
    newest_first: Sequence[Candidate] = sorted(
        backups, key=lambda b: (b.at.astimezone(timezone.utc), b.id), reverse=True
    )
    plan = RetentionPlan()
    if not newest_first:
        return plan

    def keep(candidate: Candidate, reason: str) -> None:
        plan.keep.setdefault(candidate.id, []).append(reason)

    keep(newest_first[0], "newest")
    full = [c for c in newest_first if not c.partial]
    if full and full[0] is not newest_first[0]:
        keep(full[0], "newest full")
    limits = {"daily": policy.keep_daily, "weekly": policy.keep_weekly, "monthly": policy.keep_monthly}
    for rule, period_of in PERIODS:
        seen: set[str] = set()
        for candidate in full:
            if len(seen) >= limits[rule]:
                break
            period = period_of(candidate.at.astimezone(timezone.utc))
            if period not in seen:
                seen.add(period)
                keep(candidate, f"{rule} {period}")
    counted = {"predeploy": policy.keep_predeploy, **{kind: policy.keep_event for kind in EVENT_KINDS}}
    for kind, limit in counted.items():
        of_kind = [c for c in newest_first if c.kind == kind][:limit]
        for position, candidate in enumerate(of_kind, 1):
            keep(candidate, f"{kind} #{position}")
    plan.delete = [c.id for c in newest_first if c.id not in plan.keep]
    return plan
