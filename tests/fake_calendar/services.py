"""Cloud Run services as ``infra/deploy.sh`` deploys them, run locally.

Each service is a ``functions-framework --source functions/main.py`` process
(the image's entry point) with ``FUNCTION_TARGET`` and the environment its
service gets, listening on a local port. Callers address a service by its
public https URL, as Google and QStash do: ``Services.request`` maps the
URL's host to the process serving it (the DNS of this little cloud), so a
channel address or a QStash destination that names the wrong service lands
on the wrong process — and gets that process's answer.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from safesync.shared.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        import json

        return json.loads(self.body)


@dataclass
class Service:
    target: str | None  # None: ``safesync serve`` (every target at /<target>)
    public_url: str
    port: int
    proc: subprocess.Popen
    log: Path


@dataclass
class Services:
    log_dir: Path
    running: dict[str, Service] = field(default_factory=dict)  # by public host

    def start(self, target: str | None, public_url: str, env: Mapping[str, str]) -> Service:
        """A functions-framework process for ``target`` (or ``safesync serve``
        for None), answering once it accepts connections."""
        port = free_port()
        bin_dir = Path(sys.executable).parent
        if target is None:
            argv = [str(bin_dir / "safesync"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        else:
            argv = [str(bin_dir / "functions-framework"), f"--source={ROOT / 'functions' / 'main.py'}",
                    "--host", "127.0.0.1", "--port", str(port)]
        full_env = {**os.environ, **env, "PORT": str(port), "PYTHONDONTWRITEBYTECODE": "1"}
        if target is not None:
            full_env["FUNCTION_TARGET"] = target
        log = self.log_dir / f"{target or 'serve'}-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        service = Service(target, public_url.rstrip("/"), port, proc, log)
        self.running[urlsplit(public_url).netloc] = service
        self._wait_ready(service)
        return service

    def _wait_ready(self, service: Service, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise AssertionError(f"{service.target} exited: {service.log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=1)
                conn.connect()
                conn.close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{service.target} never listened on {service.port}")

    def request(self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
                timeout: float = 30) -> Response:
        """Send to whichever local process serves ``url``'s host (path and
        query kept); an unknown host is a test bug."""
        split = urlsplit(url)
        service = self.running.get(split.netloc)
        assert service is not None, f"no service answers for {split.netloc} (known: {sorted(self.running)})"
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=timeout)
        try:
            path = (split.path or "/") + (f"?{split.query}" if split.query else "")
            conn.request(method, path, body=body, headers=dict(headers or {}))
            reply = conn.getresponse()
            return Response(reply.status, {k: v for k, v in reply.getheaders()}, reply.read())
        finally:
            conn.close()

    def stop(self) -> None:
        for service in self.running.values():
            service.proc.terminate()
        for service in self.running.values():
            try:
                service.proc.wait(10)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait(5)
        self.running.clear()
