"""A real HTTP server under test: ``safesync serve`` (every target at
``/<target>``) or ``functions-framework --target X`` (one target at ``/``),
started as a child process with the test's environment, spoken to with raw
bytes and raw headers (duplicates, odd values) over loopback.

The server's stderr — its JSON log — goes to the suite's log folder, so the
session-end secrets scan (tests/conftest.py) reads every line it wrote.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import psutil

from safesync.shared.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR_ENV = "SAFESYNC_TEST_LOG_DIR"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class LiveServer:
    def __init__(self, *, target: str | None = None, env: Mapping[str, str] | None = None) -> None:
        """``target`` None: ``safesync serve``; else functions-framework for it."""
        self.target = target
        self.env = dict(env if env is not None else os.environ)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        folder = Path(self.env.get(LOG_DIR_ENV) or os.environ.get(LOG_DIR_ENV) or "/tmp")
        self.log_path = folder / f"server-{uuid.uuid4().hex[:8]}.jsonl"

    def start(self) -> "LiveServer":
        """Start the server and wait until it answers on its port. The port
        comes from ``free_port()``, which frees it again before the child binds
        it: in that gap another process of a parallel suite (a fake Google, an
        emulator, another server) may take it, and a readiness check that only
        asks "does something answer?" would then send the whole test to that
        stranger. So the answer counts only once our own process tree holds the
        listening socket; a stolen port is retried on a new one."""
        for _attempt in range(5):
            if self._start_on_port():
                return self
            self.stop()
            self.port = free_port()
        raise AssertionError("no free port could be kept for the server")

    def _start_on_port(self) -> bool:
        """True when the child serves ``self.port``; False when another
        process holds it."""
        bin_dir = Path(sys.executable).parent
        if self.target is None:
            argv = [str(bin_dir / "safesync"), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            argv = [str(bin_dir / "functions-framework"), "--source", str(ROOT / "functions" / "main.py"),
                    "--target", self.target, "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log,
                                     env={**self.env, "PYTHONDONTWRITEBYTECODE": "1"}, cwd=self.env.get("PWD", None))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self._listener() == "other":
                    return False
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            owner = self._listener()
            if owner is not None and owner != "ours":
                return False
            if owner == "ours":
                try:
                    self.request("OPTIONS", self.path("status"))
                    return True
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError("server never answered")

    def _listener(self) -> str | None:
        """Who listens on our port: "ours" (the child or a descendant),
        "other", or None (nobody yet)."""
        ours = {self.proc.pid} if self.proc is not None else set()
        try:
            ours |= {child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)}
        except (psutil.NoSuchProcess, AttributeError):
            pass
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == self.port:
                return "ours" if conn.pid in ours else "other"
        return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self._log.close()
            self.proc = None

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def path(self, target: str) -> str:
        """Where ``target`` is served: ``/<target>``, or ``/`` under functions-framework."""
        return "/" if self.target is not None else f"/{target}"

    def request(self, method: str, path: str, body: bytes = b"",
                headers: Mapping[str, str] | Iterable[tuple[str, str]] = (), timeout: float = 120) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
            for name, value in items:
                conn.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def post(self, target: str, body: bytes, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> Reply:
        return self.request("POST", self.path(target), body, headers)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")
