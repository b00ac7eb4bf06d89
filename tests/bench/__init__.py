"""Benchmarks (``make bench``); see ``__main__`` for how they are run and printed."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from safesync.shared.embedded import EmbeddedPostgres

Tools = Literal["server", "discovered"]


@contextmanager
def embedded_server(prefix: str, *, tools: Tools = "server", bin_dir: Path | None = None) -> Iterator[tuple[EmbeddedPostgres, Path]]:
    """A fresh embedded PostgreSQL in its own temp dir (the server and the
    dir are gone afterwards, even when a benchmark fails half-way), and the
    dir for the benchmark's files.

    ``tools`` says which pg_dump/pg_restore safesync's tool discovery finds
    meanwhile: ``server`` pins ``PG_BIN`` to the server's own binaries (the
    same version on both ends); ``discovered`` unsets it, so the tools are
    found as on a user's machine. ``PG_BIN`` is put back afterwards.
    ``bin_dir`` runs another server build (e.g. a stock one with JIT)."""
    saved = os.environ.get("PG_BIN")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the server's OS user must reach its data dir below
        pg = EmbeddedPostgres(work / "pg")
        if bin_dir is not None:
            pg.bin = bin_dir
        pg.start()
        try:
            if tools == "server":
                os.environ["PG_BIN"] = str(pg.bin)
            else:
                os.environ.pop("PG_BIN", None)
            yield pg, work
        finally:
            if saved is None:
                os.environ.pop("PG_BIN", None)
            else:
                os.environ["PG_BIN"] = saved
            pg.destroy()


@dataclass
class Memory:
    """This process's memory during one measured run: the peak RSS, and how
    far it rose above the RSS the run started from (what the run itself
    held, without what earlier runs left behind)."""

    peak_rss_mb: float | None = None
    rss_growth_mb: float | None = None


def _status_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return round(int(next(line.split()[1] for line in status.splitlines() if line.startswith(field + ":"))) / 1024, 1)


@contextmanager
def memory_of_run() -> Iterator[Memory]:
    """Measure the block's ``Memory``. The high-water mark is reset first
    (Linux: writing 5 to clear_refs resets VmHWM); getrusage's ru_maxrss
    would show the most any earlier run held, so memory could never look
    flat in table size."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mb("VmRSS")
    memory = Memory()
    try:
        yield memory
    finally:
        memory.peak_rss_mb = _status_mb("VmHWM")
        memory.rss_growth_mb = round(memory.peak_rss_mb - before, 1)
