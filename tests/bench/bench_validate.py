"""Validate's data diff and the staging clone's proof on a 1M-row ``lessons``
table (the LMS schema), beside content sync's compare of the same tables.

All three answer the same question — which rows differ — and since issue
#19 run on one engine (``shared/rowdiff.py``); these rows show they cost
alike. Rows, best of ``ROUNDS`` each, loopback:

- validate ``--against`` (``validate.compare``: schema diff + data diff of
  schema ``public``), identical tables, then 1 % of lessons changed;
- the clone proof: the same comparison as ``staging clone`` runs it after
  its swap (the source in one REPEATABLE READ read-only snapshot, the
  target in autocommit), identical tables;
- content sync's ``compare`` of the content tables (the reference the two
  above should match), identical and 1 % changed.

Each row names the time of streaming both databases' content tables
(``COPY TO STDOUT``, both at once) as the naive baseline. ``BENCH_V_ROWS``
shrinks the table for a quick look.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import psycopg

from safesync.shared.embedded import EmbeddedPostgres
from tests.bench import bench_content_sync as cs
from tests.bench import embedded_server

ROWS = int(os.environ.get("BENCH_V_ROWS", 1_000_000))
ROUNDS = int(os.environ.get("BENCH_V_ROUNDS", 2))


def _best(fn) -> float:
    return min(cs._timed(fn) for _ in range(ROUNDS))


def _validate(src: str, tgt: str, expect_identical: bool) -> None:
    from safesync.functions.validate import compare
    from safesync.shared.db import connect

    with connect(src) as a, connect(tgt) as b:
        result = compare(a, b, ["public"])
    assert result.data.identical is expect_identical, result.data.rows("a", "b")


def _clone_proof(src: str, tgt: str) -> None:
    """The comparison ``clone_database`` runs after its swap, on connections
    opened as it opens them."""
    from safesync.functions.validate import compare
    from safesync.shared.db import connect

    with connect(src, application_name="safesync-clone-source") as a, connect(tgt, autocommit=True, application_name="safesync-clone-target") as b:
        a.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        a.read_only = True
        a.execute("select pg_export_snapshot()")
        result = compare(a, b, ["public"])
    assert result.identical, result.data.rows("a", "b")


def run() -> list[dict]:
    cs.ROWS = ROWS
    with embedded_server("bench-validate-") as (pg, tmp):
        return _measure(pg, tmp)


def _row(name: str, wall: float, naive: float, reference: float | None, note: str = "") -> dict:
    return {
        "name": f"{name}, {ROWS:,} lessons, loopback",
        "wall_s": wall,
        "naive_s": naive,
        "ratio": f"{round(wall / naive, 2)}× streaming both",
        "content_compare_s": reference,
        "vs_content_compare": round(wall / reference, 2) if reference else None,
        **asdict(cs._last_memory),
        "target": "≈ content compare (≤ 1.25×)" if reference else "",
        "met": wall <= 1.25 * reference if reference else None,
        "note": note,
    }


def _measure(pg: EmbeddedPostgres, tmp: Path) -> list[dict]:
    src, tgt = cs._build(pg)
    settings = cs._settings(tmp, src, tgt)
    rows: list[dict] = []
    cs._vacuum(pg)
    naive = _best(lambda: cs._stream_both(src, tgt))
    content = _best(lambda: cs._ours(settings, "compare"))
    rows.append(_row("content compare identical", content, naive, None))
    rows.append(_row("validate --against identical", _best(lambda: _validate(src, tgt, True)), naive, content))
    rows.append(_row("clone proof identical", _best(lambda: _clone_proof(src, tgt)), naive, content))
    changed = cs._change_one_percent(src, 1)
    cs._vacuum(pg)
    content = _best(lambda: cs._ours(settings, "compare"))
    rows.append(_row(f"content compare 1% changed ({changed:,} rows)", content, naive, None))
    rows.append(_row(f"validate --against 1% changed ({changed:,} rows)", _best(lambda: _validate(src, tgt, False)), naive, content))
    return rows
