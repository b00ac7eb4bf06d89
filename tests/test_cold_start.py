"""Cold start: a fresh functions-framework process answers its first
(rejected) request without importing heavy clients (they load lazily)."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safesync.shared.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


def first_response_time(target: str) -> tuple[float, int]:
    port = free_port()
    bin_dir = Path(sys.executable).parent
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(bin_dir / "functions-framework"), "--source", str(ROOT / "functions" / "main.py"), "--target", target, "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        while time.perf_counter() - start < 20:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("POST", "/", body=b"{}", headers={"Content-Type": "application/json"})
                status = conn.getresponse().status
                return time.perf_counter() - start, status
            except OSError:
                time.sleep(0.01)
        raise AssertionError("server never answered")
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("target", ["backup", "calendar_sync"])
def test_a_fresh_process_answers_its_first_request_with_401(target: str) -> None:
    """The time itself is a benchmark figure (tests/bench/bench_spine.py):
    timings in a loaded test run prove nothing."""
    _, status = first_response_time(target)
    assert status == 401


def test_heavy_clients_are_not_imported_by_the_entry_point() -> None:
    code = (
        "import sys, safesync.functions.main;"
        "heavy = [m for m in ('googleapiclient', 'google.cloud.storage', 'psycopg', 'pydantic') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_backup_job_imports_cryptography_only_for_encrypted_backups() -> None:
    """age (cryptography) is part of a job's start-up time: loaded by the first encrypted backup, not by the job."""
    code = "import sys, safesync.functions.cli, safesync.functions.backup; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
