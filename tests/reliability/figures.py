"""The collector: per-area figures of the reliability proof.

A test takes the ``tally`` fixture, asks it for the ``Tally`` of an area and
records every case it tries with ``check`` (an unexpected outcome is counted
*and* raised, so hypothesis can shrink it and the test fails) and every
database or storage change that should not have happened with ``unchanged``.
Each test's tallies are appended, as JSON lines, to a folder the table plugin
(``tests.reliability.table``) creates; at the end of the session the plugin
merges them per area, writes ``reliability-results.json`` and prints one
table. Without the plugin (``make test``) the figures are simply not kept:
the assertions are the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

RESULTS_DIR_ENV = "SAFESYNC_RELIABILITY_DIR"
MAX_NOTES = 5

# Table order; an area not listed here comes after these, alphabetically.
AREAS = (
    "bad input: HTTP",
    "bad input: CLI",
    "auth",
    "kill: backup",
    "kill: content sync",
    "kill: staging clone",
    "kill: calendar page",
    "postgres restart",
    "storage unavailable",
    "delivery: same message",
    "delivery: concurrent triggers",
    "secrets",
    "cold start",
    "load",
)


@dataclass
class Tally:
    """What one test tried in one area."""

    area: str
    test: str = ""
    tried: int = 0
    expected: int = 0
    unexpected: int = 0
    changed: int = 0
    figures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, *, strict: bool = True) -> bool:
        """Count one case; an unexpected outcome raises unless ``strict`` is
        False (then the caller asserts later, e.g. after a load run)."""
        self.tried += 1
        if ok:
            self.expected += 1
        else:
            self.unexpected += 1
            self._note(what)
            if strict:
                raise AssertionError(f"[{self.area}] unexpected: {what}")
        return ok

    def unchanged(self, before: Mapping[str, Any], after: Mapping[str, Any], what: str) -> None:
        """Count the rows/objects that differ between two snapshots (see
        ``tests.reliability.state``) and fail if any does."""
        from .state import count_changes

        changed = count_changes(before, after)
        if changed:
            self.changed += changed
            self._note(f"{what}: {changed} row(s)/object(s) changed")
            raise AssertionError(f"[{self.area}] {what}: {changed} row(s)/object(s) changed where none should")

    def figure(self, name: str, value: Any) -> None:
        """A measured figure shown next to the counts (latency, seconds...)."""
        self.figures[name] = value if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)

    def _note(self, what: str) -> None:
        if len(self.notes) < MAX_NOTES and what[:300] not in self.notes:  # hypothesis replays a failure
            self.notes.append(what[:300])

    def save(self) -> None:
        folder = os.environ.get(RESULTS_DIR_ENV)
        if not folder or not self.tried and not self.figures:
            return
        with open(Path(folder) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(self)) + "\n")


def load(folder: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records


def merge(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per area: counts summed, figures and notes gathered."""
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        row = rows.setdefault(
            record["area"], {"area": record["area"], "tried": 0, "expected": 0, "unexpected": 0, "changed": 0, "figures": {}, "notes": [], "tests": 0}
        )
        row["tests"] += 1
        for key in ("tried", "expected", "unexpected", "changed"):
            row[key] += int(record.get(key, 0))
        for name, value in record.get("figures", {}).items():
            values = row["figures"].setdefault(name, [])
            if value not in values:
                values.append(value)
        row["notes"] += [n for n in record.get("notes", []) if n not in row["notes"]][: MAX_NOTES - len(row["notes"])]
    order = {area: i for i, area in enumerate(AREAS)}
    merged = sorted(rows.values(), key=lambda r: (order.get(r["area"], len(AREAS)), r["area"]))
    for row in merged:
        row["figures"] = {k: " / ".join(v) for k, v in row["figures"].items()}
    return merged


def render(rows: list[dict[str, Any]], *, title: str = "safesync reliability", file=None) -> None:
    """Print the table (rich); a row with an unexpected outcome or a change is red."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in (("area", "left"), ("cases", "right"), ("expected", "right"), ("unexpected", "right"),
                          ("changed where none should", "right"), ("figures", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    totals = {"tried": 0, "expected": 0, "unexpected": 0, "changed": 0}
    for row in rows:
        for key in totals:
            totals[key] += row[key]
        bad = row["unexpected"] or row["changed"]
        figures = ", ".join(f"{k} {v}" for k, v in row["figures"].items())
        table.add_row(row["area"], str(row["tried"]), str(row["expected"]), str(row["unexpected"]), str(row["changed"]),
                      figures, style="red" if bad else None)
    table.add_section()
    table.add_row("total", *(str(totals[k]) for k in ("tried", "expected", "unexpected", "changed")), "",
                  style="bold red" if totals["unexpected"] or totals["changed"] else "bold")
    console = Console(file=file, width=max(140, Console(file=file).width), highlight=False)
    console.print(table)
    for row in rows:
        for note in row["notes"]:
            console.print(f"[red]✗ {row['area']}:[/] {note}")
