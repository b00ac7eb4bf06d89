"""The fake's HTTP side: Calendar v3 REST, the multipart batch endpoint, an
OAuth token endpoint, and switchable faults.

Faults (``FakeCalendar.faults``) hit whole HTTP requests and, inside a
batch, single items, drawn from a seeded RNG so a storm is reproducible:
``429`` (rateLimitExceeded), ``403rate`` (403 rateLimitExceeded /
userRateLimitExceeded), ``500`` (backendError), ``drop`` (the connection is
closed without an answer — before or after the change was applied) and
``slow`` (an answer delayed by ``slow_s``); ``retry_after`` adds that
Retry-After header to the rate-limit faults. ``latency`` delays every request.
"""

from __future__ import annotations

import base64
import email.parser
import json
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .store import ApiError, FakeStore

DROP = object()
BATCH_LIMIT = 1000


def _discovery_scopes() -> dict[str, frozenset[str]]:
    """Each Calendar method's accepted scopes, from the discovery document
    the real client library ships (the same one it builds requests from)."""
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "calendar.v3.json"
    resources = json.loads(path.read_text())["resources"]
    return {f"{r}.{m}": frozenset(spec.get("scopes", [])) for r, res in resources.items() for m, spec in res["methods"].items()}


METHOD_SCOPES = _discovery_scopes()


def _method_name(method: str, rest: list[str]) -> str | None:
    """The Calendar method a REST call is, e.g. ``events.patch``."""
    if rest == ["channels", "stop"]:
        return "channels.stop"
    if len(rest) < 3 or rest[0] != "calendars" or rest[2] != "events":
        return None
    if len(rest) == 3:
        return {"GET": "events.list", "POST": "events.insert"}.get(method)
    if len(rest) == 5 and rest[4] == "instances":
        return "events.instances"
    if len(rest) == 4 and rest[3] == "watch":
        return "events.watch"
    if len(rest) == 4:
        return {"GET": "events.get", "PATCH": "events.patch", "PUT": "events.update", "DELETE": "events.delete"}.get(method)
    return None


@dataclass
class Faults:
    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "403rate", "500", "drop")
    seed: int = 0
    slow_s: float = 0.0
    only: str | None = None  # a path prefix: fault only those requests (e.g. "/batch")
    retry_after: str | None = None  # a Retry-After header on the rate-limit faults (seconds or an HTTP-date)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self, *, item: bool = False) -> str | None:
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        kinds = [k for k in self.kinds if not (item and k in ("drop", "slow"))]
        return self.rng.choice(kinds) if kinds else None


def fault_error(kind: str, rng: random.Random) -> ApiError:
    if kind == "429":
        return ApiError(429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits")
    if kind == "403rate":
        return ApiError(403, rng.choice(["rateLimitExceeded", "userRateLimitExceeded"]), "Rate Limit Exceeded", "usageLimits")
    return ApiError(500, "backendError", "Backend Error")


class FakeCalendar:
    """Run with ``start()``; ``root`` is the SAFESYNC_GOOGLE_API_ROOT to use."""

    def __init__(self) -> None:
        self.store = FakeStore()
        self.faults = Faults()
        self.latency = 0.0
        self.calls: Counter[str] = Counter()
        self.batch_items: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # faults served, by kind
        self.access_tokens: dict[str, frozenset[str]] = {}  # token -> its scopes
        # What the user consented to for the refresh token (a narrow grant).
        self.granted_scopes = frozenset({"https://www.googleapis.com/auth/calendar.events"})
        self.token_requests: list[dict[str, str]] = []
        self.client_id = "fake-client-id.apps.googleusercontent.com"
        self.refresh_token = "fake-refresh-token"
        self._server: ThreadingHTTPServer | None = None
        self._fault_lock = threading.Lock()
        self.qstash: Any = None  # the fake QStash beside it (fixtures.fake)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> "FakeCalendar":
        fake = self

        class Handler(_Handler):
            calendar = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def authorized_user_json(self) -> str:
        """Credentials whose refresh goes to this fake's token endpoint."""
        return json.dumps({
            "type": "authorized_user", "client_id": self.client_id, "client_secret": "fake-client-secret",
            "refresh_token": self.refresh_token, "token_uri": f"{self.root}/token",
        })

    def reset_counts(self) -> None:
        self.calls.clear()
        self.batch_items.clear()
        self.injected.clear()

    def draw(self, *, item: bool = False) -> str | None:
        with self._fault_lock:
            kind = self.faults.draw(item=item)
            if kind:
                self.injected[kind] += 1
            return kind

    # -- dispatch ---------------------------------------------------------------
    def handle_api(self, method: str, path: str, query: dict[str, str], headers, body: bytes, *, inner: bool = False,
                   scopes: frozenset[str] | None = None) -> tuple[int, dict[str, str], Any]:
        """One REST call → (status, headers, JSON body or None). Calls inside
        a batch (``inner``) are counted in ``batch_items``, not ``calls``.
        ``scopes``: the access token's; a method none of them allows is 403."""
        calls = Counter() if inner else self.calls
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            if parts[:2] != ["calendar", "v3"]:
                raise ApiError(404, "notFound", "Not Found")
            rest = parts[2:]
            name = _method_name(method, rest)
            if scopes is not None and name and not scopes & METHOD_SCOPES[name]:
                raise ApiError(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
            payload = json.loads(body) if body.strip() else {}
            if method in ("POST", "PATCH", "PUT") and query.get("conferenceDataVersion") != "1":
                # events.insert/patch/update, conferenceDataVersion: "Version 0 assumes no
                # conference data support and ignores conference data in the event's body."
                payload.pop("conferenceData", None)
            if rest == ["channels", "stop"] and method == "POST":
                calls["stop"] += 1
                self.store.stop(payload)
                return 204, {}, None
            if len(rest) < 3 or rest[0] != "calendars" or rest[2] != "events":
                raise ApiError(404, "notFound", "Not Found")
            cal = rest[1]
            if len(rest) == 3:
                if method == "GET":
                    calls["list"] += 1
                    return 200, {}, self.store.list(cal, query)
                if method == "POST":
                    calls["insert"] += 1
                    return 200, {}, self.store.insert(cal, payload)
            elif len(rest) == 4 and rest[3] == "watch" and method == "POST":
                calls["watch"] += 1
                return 200, {}, self.store.watch(cal, payload)
            elif len(rest) == 5 and rest[4] == "instances" and method == "GET":
                calls["instances"] += 1
                return 200, {}, self.store.instances(cal, rest[3], query)
            elif len(rest) == 4:
                event_id, if_match = rest[3], headers.get("If-Match")
                calls[method.lower()] += 1
                if method == "GET":
                    return 200, {}, self.store.get(cal, event_id)
                if method in ("PATCH", "PUT"):
                    return 200, {}, self.store.patch(cal, event_id, payload, if_match, replace=method == "PUT")
                if method == "DELETE":
                    self.store.delete(cal, event_id, if_match)
                    return 204, {}, None
            raise ApiError(405, "methodNotAllowed", "Method not allowed")
        except ApiError as exc:
            return exc.status, {}, exc.body()
        except (ValueError, KeyError) as exc:
            return 400, {}, ApiError(400, "badRequest", f"Bad Request: {exc}").body()

    def handle_batch(self, content_type: str, body: bytes, scopes: frozenset[str] | None = None) -> tuple[int, dict[str, str], bytes]:
        message = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        if not message.is_multipart():
            return 400, {}, b'{"error": {"code": 400, "message": "batch body must be multipart/mixed"}}'
        parts = message.get_payload()
        # Send batch requests: "You're limited to 1000 calls in a single batch request."
        if len(parts) > BATCH_LIMIT:
            return 400, {}, ApiError(400, "invalid", f"A batch request may contain at most {BATCH_LIMIT} calls.").body()
        boundary = "batch_" + secrets.token_hex(8)
        out: list[bytes] = []
        for part in parts:
            content_id = part.get("Content-ID", "")
            raw = part.get_payload(decode=False)
            if isinstance(raw, list):  # should not happen: application/http is not multipart
                raw = raw[0].as_string()
            status, headers, payload = self._batch_item(raw, scopes)
            text = json.dumps(payload) if payload is not None else ""
            lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json; charset=UTF-8"]
            if isinstance(payload, dict) and payload.get("etag"):
                lines.append(f"ETag: {payload['etag']}")
            lines.append(f"Content-Length: {len(text.encode())}")
            inner = "\r\n".join(lines) + "\r\n\r\n" + text
            cid = content_id.strip("<>")
            out.append(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{cid}>\r\n\r\n{inner}\r\n".encode()
            )
        out.append(f"--{boundary}--\r\n".encode())
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, b"".join(out)

    def _batch_item(self, raw: str, scopes: frozenset[str] | None) -> tuple[int, dict[str, str], Any]:
        head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
        request_line, *header_lines = head.split("\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip()] = v.strip()
        split = urlsplit(target)
        query = dict(parse_qsl(split.query))
        kind = self.draw(item=True)
        self.batch_items[method.lower()] += 1
        if kind:
            return _error_tuple(fault_error(kind, self.faults.rng), self.faults.retry_after)
        return self.handle_api(method, split.path, query, _CaseInsensitive(headers), body.encode(), inner=True, scopes=scopes)

    def handle_token(self, body: bytes) -> tuple[int, dict[str, str], Any]:
        form = dict(parse_qsl(body.decode()))
        self.token_requests.append(form)
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") == self.refresh_token and form.get("client_id") == self.client_id:
            # RFC 6749 section 6: "The requested scope MUST NOT include any
            # scope not originally granted by the resource owner."
            requested = frozenset(form.get("scope", "").split())
            if not requested <= self.granted_scopes:
                return 400, {}, {"error": "invalid_scope", "error_description": "Bad Request"}
            scopes = requested or self.granted_scopes
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer" and form.get("assertion"):
            claims = json.loads(base64.urlsafe_b64decode(form["assertion"].split(".")[1] + "=="))
            scopes = frozenset(claims.get("scope", "").split())
        else:
            return 400, {}, {"error": "invalid_grant", "error_description": "Bad Request"}
        token = "ya29.fake-" + secrets.token_hex(12)
        self.access_tokens[token] = scopes
        return 200, {}, {"access_token": token, "expires_in": 3599, "token_type": "Bearer", "scope": " ".join(sorted(scopes))}


_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 412: "Precondition Failed", 429: "Too Many Requests",
            500: "Internal Server Error"}


def _error_tuple(err: ApiError, retry_after: str | None = None) -> tuple[int, dict[str, str], Any]:
    limited = err.status == 429 or err.reason in ("rateLimitExceeded", "userRateLimitExceeded")
    return err.status, ({"Retry-After": retry_after} if retry_after and limited else {}), err.body()


class _CaseInsensitive(dict):
    def get(self, key, default=None):  # type: ignore[override]
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    calendar: FakeCalendar

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True

    def _handle(self) -> None:
        fake = self.calendar
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        if split.path == "/token":
            fake.calls["token"] += 1
            self._send(*fake.handle_token(body))
            return
        if fake.latency:
            time.sleep(fake.latency)
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in fake.access_tokens:
            self._send(401, {}, ApiError(401, "authError", "Invalid Credentials").body())
            return
        kind = fake.draw() if fake.faults.only is None or split.path.startswith(fake.faults.only) else None
        drop_after = False
        if kind == "slow":
            time.sleep(fake.faults.slow_s)
        elif kind == "drop":
            if fake.faults.rng.random() < 0.5:
                self._drop()
                return
            drop_after = True
        elif kind:
            self._send(*_error_tuple(fault_error(kind, fake.faults.rng), fake.faults.retry_after))
            return
        if split.path.startswith("/batch/calendar/v3"):
            fake.calls["batch"] += 1
            result = fake.handle_batch(self.headers.get("Content-Type", ""), body, fake.access_tokens[auth[7:]])
        else:
            result = fake.handle_api(self.command, split.path, dict(parse_qsl(split.query)), self.headers, body,
                                     scopes=fake.access_tokens[auth[7:]])
        if drop_after:  # the change happened; the answer is lost
            self._drop()
            return
        self._send(*result)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle
