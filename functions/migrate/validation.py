"""Validation around a migration: the one-database checks configured for
the target, its ``[[validate.rules]]`` and ``[migrate].rules``.

A migration is judged by what it *breaks*: findings already present before
it ran (a table that never had a primary key, a rule that was already
failing) are reported as warnings, only new findings fail the migration and
roll it back. Findings are matched by check and object, so an orphan count
that merely grows is "already failing", while a rule that starts failing is
new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from safesync.shared.config import Settings

Key = tuple[str, str]


@dataclass
class Validation:
    new: list[dict[str, Any]] = field(default_factory=list)
    preexisting: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.new

    def summary(self) -> str:
        names = sorted({f"{f['check']}: {f['object']}" for f in self.new})
        return f"{len(self.new)} new validation failure(s): " + "; ".join(names[:5]) + (" …" if len(names) > 5 else "")


def findings(settings: Settings, conn: psycopg.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(finding rows, check summary rows) for the target as ``conn`` sees it
    (inside a migration transaction: its uncommitted state). Read-only."""
    from safesync.functions.validate import RuleSpec, check_database, run_checks

    cfg = settings.config.migrate
    result = check_database(settings, cfg.database, conn)
    rows = [f.row() for f in result.findings]
    checks = result.summary_rows()
    if cfg.rules:
        own = run_checks(
            conn,
            schemas=(),
            rules=[RuleSpec(r.name, r.sql, r.max_rows) for r in cfg.rules],
            rule_timeout=settings.config.validate_.rule_timeout,
        )
        rows += [{**f.row(), "check": "migrate rules"} for f in own.findings]
        checks.append({"check": "migrate rules", "examined": len(cfg.rules), "status": "FAILED" if own.findings else "ok", "failures": len(own.findings)})
    return rows, checks


def baseline(settings: Settings, conn: psycopg.Connection) -> set[Key]:
    """What already fails before the migration."""
    rows, _ = findings(settings, conn)
    return {(r["check"], r["object"]) for r in rows}


def validate(settings: Settings, conn: psycopg.Connection, before: set[Key]) -> Validation:
    rows, checks = findings(settings, conn)
    out = Validation(checks=checks)
    for row in rows:
        (out.preexisting if (row["check"], row["object"]) in before else out.new).append(row)
    return out
