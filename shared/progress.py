"""Progress a person can follow on long CLI work, and silence for scripts.

A long job takes an optional ``Meter`` and tells it what it is doing as it
goes: the phase, tables done out of how many, rows, bytes. The CLI hands one
out only when stdout is a terminal and ``--json`` is off (``terminal``): a
rich line on stderr that disappears when the job ends, so the report that
follows stays the only output; scripts, pipes and HTTP get ``None``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Meter(Protocol):
    def __call__(
        self,
        *,
        phase: str | None = None,
        tables: tuple[int, int] | None = None,
        rows: int | None = None,
        bytes: int | None = None,
    ) -> None:
        """Update what is shown; what is not given stays as it was."""


@contextmanager
def terminal(label: str, *, quiet: bool) -> Iterator[Meter | None]:
    """A Meter drawing on stderr, or None when ``quiet`` or stdout is not a
    terminal."""
    if quiet or not sys.stdout.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[counts]}"),
        DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(label, total=None, counts="")
        state: dict[str, object] = {}

        def meter(*, phase=None, tables=None, rows=None, bytes=None) -> None:
            # Redraw at once when the phase or the tables move; bytes and
            # rows wait for rich's own 10 Hz refresh (a clone reports every 64 KiB).
            moved = phase is not None or (tables is not None and state.get("tables") != f"{tables[0]}/{tables[1]} tables")
            if tables is not None:
                state["tables"] = f"{tables[0]}/{tables[1]} tables"
            if rows is not None:
                state["rows"] = f"{rows:,} rows"
            counts = " · ".join(str(state[k]) for k in ("tables", "rows") if k in state)
            update: dict[str, object] = {"counts": counts}
            if phase is not None:
                update["description"] = f"{label}: {phase}"
            if bytes is not None:
                update["completed"] = bytes
            bar.update(task, refresh=moved, **update)

        yield meter
