"""The HTTP side of every function: method, size, auth, JSON body, errors.

``serve`` is what each functions-framework target calls. It reads at most
``SAFESYNC_MAX_BODY_BYTES`` (1 MB) before anything else (413), authenticates
(401) before parsing, parses and validates the JSON body (400), loads the
config (400), then hands a ``Call`` to the target's handler. Permanent
failures answered to QStash become 489 + ``Upstash-NonRetryable-Error`` so
QStash stops retrying a request that can never succeed — also those refused
before authentication (405, 413), when the QStash token verifies in all but
the hash of the body that was never read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .auth import Principal, authenticate, qstash_sender, short_printable
from .delivery import Delivery, idempotency_key
from .errors import AuthError
from .errors import BadRequest, ConfigError, Forbidden, MethodNotAllowed, PayloadTooLarge, RateLimited, SafesyncError
from .log import get_logger, redact, redact_obj
from .parsing import parse_json_object
from .report import Answer

if TYPE_CHECKING:  # flask is imported by functions-framework anyway; keep it out of jobs
    import flask

    from .config import Settings

log = get_logger("http")

DEFAULT_MAX_BODY = 1_000_000
IDEMPOTENCY_HEADER = "Idempotency-Key"
QSTASH_NON_RETRYABLE = 489


@dataclass
class Call:
    """One authenticated request, as a handler sees it."""

    target: str
    method: str
    body: dict[str, Any]
    principal: Principal
    headers: Mapping[str, str]
    args: Mapping[str, str]
    raw_body: bytes = b""
    _settings: "Settings | None" = field(default=None, repr=False)

    @property
    def settings(self) -> "Settings":
        if self._settings is None:
            from .config import load_settings

            self._settings = load_settings()
        return self._settings

    @cached_property
    def delivery(self) -> Delivery | None:
        """This request's identity for de-duplication (``shared.delivery``):
        a QStash token's jti (+ its message id for retries), a bearer
        caller's ``Idempotency-Key``; None when nothing identifies it (each
        bearer call without a key is new; Vercel events are keyed by the
        webhook handler from their signed event id)."""
        p = self.principal
        if p.kind == "qstash" and p.token_id:
            return self.delivery_keyed(p.token_id, message_id=p.message_id)
        if p.kind == "bearer":
            key = idempotency_key(self.headers.get(IDEMPOTENCY_HEADER))
            return self.delivery_keyed(key) if key else None
        return None

    def delivery_keyed(self, key: str, *, message_id: str | None = None) -> Delivery:
        """A delivery identified by ``key``, scoped by target, caller and body."""
        return Delivery.of(self.principal.kind, key, target=self.target, caller=self.principal.identity, body=self.raw_body, message_id=message_id)

    def trigger(self) -> dict[str, Any]:
        """Who triggered the run, for reports and manifests."""
        p = self.principal
        info: dict[str, Any] = {"via": p.kind, "caller": p.identity}
        if p.message_id:
            info["message_id"] = p.message_id
        if p.schedule_id:
            info["schedule_id"] = p.schedule_id
        return info

    def require_admin(self) -> None:
        if not self.principal.is_admin:
            raise Forbidden("this action needs the admin token (SAFESYNC_ADMIN_TOKEN)")


Handler = Callable[[Call], "Answer | flask.Response"]


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> "flask.Response":
    import flask

    # Every body leaves through here: secrets are redacted from it, whatever produced it.
    response = flask.Response(json.dumps(redact_obj(body), default=str, ensure_ascii=False), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def respond(answer: Answer, principal: Principal | None, headers: Mapping[str, str] | None = None) -> "flask.Response":
    """Send an answer; to QStash, a permanent failure is 489 + NonRetryable."""
    status, extra = answer.status, dict(headers or {})
    if principal is not None and principal.is_qstash and status >= 400 and answer.permanent:
        extra["Upstash-NonRetryable-Error"] = "true"
        status = QSTASH_NON_RETRYABLE
    return json_response(status, answer.body, extra)


def error_answer(exc: SafesyncError) -> Answer:
    return Answer(exc.status, exc.to_dict(), exc.exit_code, exc.permanent)


MAX_BODY_DIGITS = 12  # a terabyte: far beyond any body; more digits is a typo


def body_limit(env: Mapping[str, str]) -> int:
    """``SAFESYNC_MAX_BODY_BYTES`` (unset or empty: 1 MB). Anything but ASCII
    digits above 0 is a ConfigError naming the setting: ``int()`` took
    ``"1MB"`` as a ValueError (a 500 on every request), ``"0"`` and ``"-5"``
    as a limit that refused every body, and other scripts' digits as a number."""
    text = env.get("SAFESYNC_MAX_BODY_BYTES", "").strip()
    if not text:
        return DEFAULT_MAX_BODY
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_BODY_DIGITS and int(text) > 0):
        raise ConfigError(f"SAFESYNC_MAX_BODY_BYTES must be a whole number of bytes above 0, not {text!r}")
    return int(text)


def _error_headers(exc: SafesyncError) -> dict[str, str] | None:
    """What an error's answer says besides its body: when to retry, which methods to use."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": ", ".join(exc.allow)}
    return None


def _read_body(request: "flask.Request", limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    return data


def serve(
    request: "flask.Request",
    target: str,
    handler: Handler,
    *,
    methods: tuple[str, ...] = ("POST",),
    allow_vercel: bool = False,
    authenticate_with: Callable[[Mapping[str, str]], Principal] | None = None,
) -> "flask.Response":
    principal: Principal | None = None
    raw: bytes | None = None
    query = request.query_string.decode("latin-1")
    try:
        if request.method not in methods:
            raise MethodNotAllowed(f"method {request.method} not allowed; use {' or '.join(methods)}", allow=methods)
        raw = _read_body(request, body_limit(os.environ))
        if authenticate_with is not None:
            principal = authenticate_with(request.headers)
        else:
            principal = authenticate(request.headers, raw, path=request.path, query=query, allow_vercel=allow_vercel)
        call = Call(
            target=target,
            method=request.method,
            body=parse_json_object(raw) if request.method == "POST" else {},
            principal=principal,
            headers=request.headers,
            args=request.args,
            raw_body=raw,
        )
        result = handler(call)
        return respond(result, principal) if isinstance(result, Answer) else result
    except SafesyncError as exc:
        if exc.status >= 500:
            log.warning("request failed", target=target, error=redact(exc.message))
        if principal is None and exc.permanent:
            # refused before the caller was known (405, 413, a bad setting):
            # a verified QStash token still makes it non-retryable
            principal = qstash_sender(request.headers, raw, path=request.path, query=query)
        return respond(error_answer(exc), principal, _error_headers(exc))
    except Exception:
        log.exception("unhandled error", target=target)
        return json_response(500, {"error": "internal error"})


def google_channel_principal(headers: Mapping[str, str]) -> Principal:
    """A Google push notification: it must name a channel and carry a token;
    the calendar job then checks the token against the channel it opened
    (401 if unknown), so nothing runs for a forged notification. Every
    header the job compares and records must be ``short_printable`` (a NUL
    in ``X-Goog-Resource-State`` failed the notification's insert: a 500)."""
    channel, token = headers.get("X-Goog-Channel-ID"), headers.get("X-Goog-Channel-Token")
    if not channel or not token:
        raise AuthError("not a Google push notification (X-Goog-Channel-ID / X-Goog-Channel-Token missing)")
    resource = [headers.get(name) or "" for name in ("X-Goog-Resource-ID", "X-Goog-Resource-State")]
    if not all(short_printable(v) for v in (channel, token, *resource)):
        raise AuthError("malformed Google channel headers")
    return Principal("google-push", f"google-channel:{channel[:64]}", frozenset({"notify"}))


def validate_body(model: type, body: Mapping[str, Any]):
    """Validate a request body against a pydantic model; errors → 400 naming
    the field (never echoing a traceback)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise BadRequest(f"{where}: {message}", {"errors": len(exc.errors())}) from None
