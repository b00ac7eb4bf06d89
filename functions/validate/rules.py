"""The user's SQL rules (``[[validate.rules]]``): a rule passes when its
query returns no rows.

A rule is arbitrary SQL from the config, so it runs where it cannot write:
a READ ONLY transaction (always rolled back) with ``statement_timeout``, through
a server-side cursor — which also rejects anything but a single query — and
only the first ``max_rows`` offending rows are fetched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import psycopg

from safesync.shared.db import read_only
from safesync.shared.log import redact


@dataclass(frozen=True)
class RuleSpec:
    name: str
    sql: str
    max_rows: int = 5


@dataclass
class RuleResult:
    name: str
    ok: bool
    problem: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    """A sample value as JSON can carry it: NaN and ±Infinity floats (no
    JSON number) as PostgreSQL spells them, anything not a JSON scalar as
    its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def run_rule(conn: psycopg.Connection, rule: RuleSpec, timeout: str) -> RuleResult:
    """Run one rule read-only; a failing query is a failed rule, not a crash."""
    text = rule.sql.strip().rstrip(";").strip()
    try:
        with read_only(conn, timeout):
            with conn.cursor(name="safesync_rule") as cur:
                cur.execute(text)
                rows = cur.fetchmany(rule.max_rows + 1)
                names = [d.name for d in cur.description or []]
    except psycopg.errors.QueryCanceled:
        return RuleResult(rule.name, False, f"rule did not finish within statement_timeout {timeout}")
    except psycopg.Error as exc:
        message = (exc.diag.message_primary or str(exc)).strip()
        return RuleResult(rule.name, False, f"rule query failed: {redact(message)}")
    if not rows:
        return RuleResult(rule.name, True)
    more = len(rows) > rule.max_rows
    sample = [{n: _jsonable(v) for n, v in zip(names, r)} for r in rows[: rule.max_rows]]
    count = f"more than {rule.max_rows}" if more else str(len(rows))
    return RuleResult(rule.name, False, f"{count} offending row(s)", sample)
