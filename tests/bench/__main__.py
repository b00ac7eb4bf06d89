"""``make bench``: run every ``tests/bench/bench_*.py`` and print one table.

Each module exposes ``run() -> list[dict]``; a row names what was measured
and carries its figures (wall_s, peak_rss_mb, bytes, ratio, target, met...).
``python -m tests.bench backup clone`` runs only the named modules.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
MAIN_COLUMNS = ("bench", "name", "wall_s", "ratio", "peak_rss_mb", "target", "met")


def main(names: list[str]) -> int:
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if m.removeprefix("bench_") in names or m in names]
    rows: list[dict] = []
    failed = False
    for name in modules:
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"tests.bench.{name}")
            for row in module.run():
                rows.append({"bench": name.removeprefix("bench_"), **row})
        except Exception:
            failed = True
            traceback.print_exc()
            rows.append({"bench": name.removeprefix("bench_"), "name": "ERROR", "note": "see traceback above"})
        print(f"{name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    table = Table(title="safesync benchmarks")
    for column in (*MAIN_COLUMNS, "other figures"):
        table.add_column(column, overflow="fold")
    for row in rows:
        other = "; ".join(f"{k}={v}" for k, v in row.items() if k not in MAIN_COLUMNS and v not in (None, ""))
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in MAIN_COLUMNS), other)
    Console(width=180).print(table)
    (HERE.parent.parent / "bench-results.json").write_text(json.dumps(rows, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
