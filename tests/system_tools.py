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


def _starts(path: str) -> bool:
    """Whether ``path --version`` runs. A package can be half there: its
    binary on PATH but its /etc files gone (say, installed while /etc was a
    private copy, as ``fresh-clone-test`` mounts it), and Chromium's
    launcher then fails before it starts the browser."""
    try:
        return subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def ensure_tool(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` if it is
    missing or does not start (reinstalled then, with the configuration
    files it lost). One installer at a time (pytest workers and other
    suites may race)."""
    found = shutil.which(binary)
    if found and _starts(found):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{binary} is not installed (or does not start) and this is no root shell with apt-get to install {package}")
    with open(APT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = shutil.which(binary)
        if not (found and _starts(found)):
            repair = ("--reinstall", "-o", "Dpkg::Options::=--force-confmiss") if found else ()
            done = _apt("install", "-y", "-q", *repair, package)
            if done.returncode != 0:  # a brand-new machine may have no package lists yet
                _apt("update", "-q")
                done = _apt("install", "-y", "-q", *repair, package)
            if done.returncode != 0:
                pytest.skip(f"apt-get install {package} failed: {done.stderr.strip()[-300:]}")
    found = shutil.which(binary)
    if not found or not _starts(found):
        pytest.skip(f"{package} installed no {binary} that starts")
    return found
