"""Cloud Run services as ``infra/deploy.sh`` deploys them, run locally.

Each service is a real server process (``tests/live_server.py``):
functions-framework with ``FUNCTION_TARGET`` and the environment its
service gets, or ``safesync serve`` for the one-host layout. Callers address
a service by its public https URL, as Google and QStash do: ``request`` maps
the URL's host to the process serving it (the DNS of this little cloud), so
a channel address or a QStash destination that names the wrong service
lands on the wrong process — and gets that process's answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from tests.live_server import LiveServer, Reply


@dataclass
class Services:
    running: dict[str, LiveServer] = field(default_factory=dict)  # by public host

    def start(self, target: str | None, public_url: str, env: Mapping[str, str]) -> LiveServer:
        """A server for ``target`` (None: ``safesync serve``, every target)
        answering under ``public_url``."""
        full_env = {**os.environ, **env}
        if target is not None:
            full_env["FUNCTION_TARGET"] = target
        server = LiveServer(target=target, env=full_env).start()
        self.running[urlsplit(public_url).netloc] = server
        return server

    def request(self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """Send to whichever process serves ``url``'s host (path and query
        kept); an unknown host is a test bug."""
        split = urlsplit(url)
        server = self.running.get(split.netloc)
        assert server is not None, f"no service answers for {split.netloc} (known: {sorted(self.running)})"
        path = (split.path or "/") + (f"?{split.query}" if split.query else "")
        return server.request(method, path, body, dict(headers or {}))

    def stop(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()
