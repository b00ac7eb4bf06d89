"""Starting an emulator process for tests (the GCS and S3 emulators share
this): a free loopback port, a private folder for its data and log, and a
readiness check that also proves the answering server is ours."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path


class Emulator:
    """A running emulator; ``host`` is its ``http://127.0.0.1:port``."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.process = process
        self.host = host
        self._workdir = workdir

    def stop(self) -> None:
        """Terminate the server and remove its folder (idempotent)."""
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


def start(
    name: str,
    command: Callable[[int, str, str, Path], list[str]],
    ready: Callable[[str, str], bool],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Emulator:
    """Start ``command(port, host, marker, workdir)`` and wait until
    ``ready(host, marker)``: the server answers and knows the marker only
    this start gave it (a port lost to a race must not leave a suite talking
    to another session's emulator). Another port if the first was taken."""
    last_log = ""
    for _attempt in range(3):
        workdir = tempfile.TemporaryDirectory(prefix=f"{name}-")
        port = _free_port()
        host = f"http://127.0.0.1:{port}"
        marker = f"safesync-{name}-{uuid.uuid4().hex[:12]}"
        log_path = Path(workdir.name) / "server.log"
        argv = command(port, host, marker, Path(workdir.name))
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        emulator = Emulator(process, host, workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if ready(host, marker):
                return emulator
            time.sleep(0.05)
        last_log = log_path.read_text(errors="replace")
        emulator.stop()
    raise RuntimeError(f"{name} did not start; last log:\n{last_log}")
