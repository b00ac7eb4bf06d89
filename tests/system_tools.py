"""Debian packages some tests drive (Chromium for the status page, the stock
``age`` CLI): installed on first use when missing and we are root (as on a
brand-new CI machine), else the test is skipped, saying why."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

APT_LOCK = Path(tempfile.gettempdir()) / "safesync-apt.lock"
APT_TIMEOUT_S = 900


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env)


def ensure_tool(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` if needed.
    One installer at a time (pytest workers and other suites may race)."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{binary} is not installed and this is no root shell with apt-get to install {package}")
    with open(APT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shutil.which(binary):
            done = _apt("install", "-y", "-q", package)
            if done.returncode != 0:  # a brand-new machine may have no package lists yet
                _apt("update", "-q")
                done = _apt("install", "-y", "-q", package)
            if done.returncode != 0:
                pytest.skip(f"apt-get install {package} failed: {done.stderr.strip()[-300:]}")
    found = shutil.which(binary)
    if not found:
        pytest.skip(f"{package} installed no {binary}")
    return found
