"""A local fake of the QStash REST API (v2): schedules, and publishing
(``POST /v2/publish/<destination>``, kept in ``published`` for a test to
deliver), recording every call.

Speaks what the ``qstash`` SDK sends and reads: ``POST /v2/schedules/<destination>``
with ``Upstash-*`` headers (an existing ``Upstash-Schedule-Id`` is replaced,
as QStash does), ``GET /v2/schedules``, ``GET|DELETE /v2/schedules/<id>``,
``PATCH .../pause|resume``, bearer auth (401 otherwise), 400 on a missing or
malformed cron or a destination that is not a URL. ``calls`` holds
``(method, path)`` in order; ``changing_calls()`` those that are not GETs.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


class FakeQStash:
    def __init__(self, token: str) -> None:
        self.token = token
        self.schedules: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_next: int | None = None  # answer the next changing call with this status
        self.published: list[dict[str, Any]] = []  # messages, in order: destination, headers, body
        self.latency = 0.0  # seconds before answering a publish (a slow QStash)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeQStash":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def changing_calls(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "GET"]

    def seed(self, schedule_id: str, destination: str, cron: str = "0 0 * * *", body: str = "{}", **extra: Any) -> None:
        """Put a schedule in place directly (e.g. a user's own, foreign one)."""
        self.schedules[schedule_id] = {
            "scheduleId": schedule_id,
            "destination": destination,
            "cron": cron,
            "createdAt": int(time.time() * 1000),
            "method": "POST",
            "header": {"Content-Type": ["application/json"]},
            "body": body,
            "retries": 3,
            "isPaused": False,
            **extra,
        }

    # -- the API -----------------------------------------------------------

    def _create(self, destination: str, headers: dict[str, str], body: str) -> tuple[int, Any]:
        cron = headers.get("upstash-cron", "")
        fields = cron.split()
        if fields and fields[0].startswith("CRON_TZ="):
            fields = fields[1:]
        if len(fields) != 5:
            return 400, {"error": f"invalid cron expression: {cron!r}"}
        if not destination.startswith(("http://", "https://")):
            return 400, {"error": f"invalid destination: {destination!r}"}
        schedule_id = headers.get("upstash-schedule-id") or f"scd_{uuid.uuid4().hex[:20]}"
        forwarded = {k[len("upstash-forward-"):]: [v] for k, v in headers.items() if k.startswith("upstash-forward-")}
        if "content-type" in headers:
            forwarded["Content-Type"] = [headers["content-type"]]
        entry: dict[str, Any] = {
            "scheduleId": schedule_id,
            "destination": destination,
            "cron": cron,
            "createdAt": int(time.time() * 1000),
            "method": headers.get("upstash-method", "POST"),
            "header": forwarded,
            "body": body,
            "retries": int(headers.get("upstash-retries", "3")),
            "isPaused": False,
        }
        for header, key in (("upstash-callback", "callback"), ("upstash-failure-callback", "failureCallback")):
            if header in headers:
                entry[key] = headers[header]
        self.schedules[schedule_id] = entry
        return 200, {"scheduleId": schedule_id}

    def _publish(self, destination: str, headers: dict[str, str], body: str) -> tuple[int, Any]:
        if not destination.startswith(("http://", "https://")):
            return 400, {"error": f"invalid destination: {destination!r}"}
        message_id = f"msg_{uuid.uuid4().hex}"
        self.published.append({"messageId": message_id, "destination": destination, "headers": headers, "body": body})
        return 201, {"messageId": message_id}

    def handle(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, Any]:
        with self._lock:
            self.calls.append((method, path))
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"error": "unauthorized"}
            if method != "GET" and self.fail_next is not None:
                status, self.fail_next = self.fail_next, None
                return status, {"error": "injected failure"}
            if method == "POST" and path.startswith("/v2/publish/"):
                return self._publish(unquote(path[len("/v2/publish/"):]), headers, body)
            prefix = "/v2/schedules"
            if not path.startswith(prefix):
                return 404, {"error": "not found"}
            rest = path[len(prefix):].lstrip("/")
            if method == "GET" and not rest:
                return 200, list(self.schedules.values())
            if method == "POST":
                return self._create(unquote(rest), headers, body)
            schedule_id, _, verb = rest.partition("/")
            if schedule_id not in self.schedules:
                return 404, {"error": f"schedule {schedule_id} not found"}
            if method == "GET" and not verb:
                return 200, self.schedules[schedule_id]
            if method == "DELETE" and not verb:
                del self.schedules[schedule_id]
                return 200, None
            if method == "PATCH" and verb in ("pause", "resume"):
                self.schedules[schedule_id]["isPaused"] = verb == "pause"
                return 200, None
            return 405, {"error": "method not allowed"}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path.startswith("/v2/publish/") and fake.latency:
                    time.sleep(fake.latency)
                status, payload = fake.handle(self.command, self.path, headers, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
