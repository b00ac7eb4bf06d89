"""A PostgreSQL server with contrib (dblink, postgres_fdw) and PL/Python,
for the side-channel tests: pgserver's bundle ships neither.

Debian's packages do. The newest installed ``/usr/lib/postgresql/<major>``
with all three is used; on a machine without one, running as root with
apt (the suite's CI: a brand-new Debian machine), they are installed on
first use — serialised by a lock, since pytest workers start together. The
server itself is started with the embedded-server code from that
installation's ``bin`` folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path("/usr/lib/postgresql")
NEEDED = ("dblink", "postgres_fdw", "plpython3")
LOCK = Path(tempfile.gettempdir()) / "safesync-apt-contrib.lock"


def installed() -> Path | None:
    """``bin`` of the newest installation with every module in NEEDED."""
    for version in sorted((p for p in ROOT.glob("*") if p.name.isdigit()), key=lambda p: int(p.name), reverse=True):
        share = Path("/usr/share/postgresql") / version.name / "extension"
        if (version / "bin" / "postgres").exists() and all((version / "lib" / f"{m}.so").exists() for m in NEEDED) and all(
            (share / f"{m}.control").exists() for m in ("dblink", "postgres_fdw", "plpython3u")
        ):
            return version / "bin"
    return None


def _apt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, env=env, timeout=900)


def _apt_majors() -> list[int]:
    """PostgreSQL majors the distribution's ``postgresql`` metapackage depends on."""
    out = subprocess.run(["apt-cache", "depends", "postgresql"], capture_output=True, text=True).stdout
    return sorted({int(w.split("-")[1]) for w in out.split() if w.startswith("postgresql-") and w.split("-")[1].isdigit()})


def ensure() -> Path | str:
    """The ``bin`` folder of a server with contrib and PL/Python, or why
    there cannot be one on this machine."""
    found = installed()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "no PostgreSQL with dblink, postgres_fdw and plpython3 under /usr/lib/postgresql, and no root apt-get to install one"
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = installed()
        if found:
            return found
        major = _apt_majors()
        if not major:  # a fresh machine has no package lists yet
            _apt("update")
            major = _apt_majors()
        packages = ["postgresql", "postgresql-contrib", *(f"postgresql-plpython3-{v}" for v in major[-1:])]
        done = _apt("install", "-y", "--no-install-recommends", *packages)
        if done.returncode != 0:
            return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-300:]}"
        if shutil.which("service"):  # Debian starts a cluster of its own on install: not ours
            subprocess.run(["service", "postgresql", "stop"], capture_output=True)
    return installed() or f"installed {' '.join(packages)} but found no server with {', '.join(NEEDED)}"
