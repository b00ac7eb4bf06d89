"""Which Google API failures are worth retrying, and the backoff between tries.

Following Google's error guide: 429, 403 ``rateLimitExceeded`` /
``userRateLimitExceeded`` and 5xx are transient (exponential backoff with
jitter); so are dropped connections and timeouts. 400, 401, 403
``quotaExceeded`` / ``forbiddenForNonOrganizer`` / anything else, 404, 409,
410 and 412 are answers, not accidents: retrying them unchanged cannot help,
so callers handle them (409 = already inserted, 410 = full sync, 412 =
conflict) or record them.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, TypeVar

import httplib2
from googleapiclient.errors import HttpError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

T = TypeVar("T")

RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}


@dataclass(frozen=True)
class Failure:
    """One failed call, classified."""

    status: int | None  # HTTP status; None for transport errors
    reason: str  # Google's reason ("rateLimitExceeded", "conditionNotMet", ...) or the transport error
    message: str
    retryable: bool
    retry_after: float | None = None
    whole_batch: bool = False  # the batch HTTP call itself failed, not this item

    def describe(self) -> str:
        code = f"{self.status} " if self.status else ""
        wait = f" (Retry-After {self.retry_after:g} s)" if self.retry_after else ""
        return f"{code}{self.reason}: {self.message}{wait}"[:500]


def _http_error_parts(exc: HttpError) -> tuple[int, str, str]:
    status = int(exc.resp.status)
    reason, message = "", str(getattr(exc, "reason", "") or "")
    try:
        body = json.loads(exc.content.decode("utf-8") if isinstance(exc.content, bytes) else exc.content)
        error = body.get("error", {})
        message = error.get("message", message)
        errors = error.get("errors") or []
        if errors:
            reason = errors[0].get("reason", "")
    except (ValueError, AttributeError, TypeError):
        pass
    return status, reason or http.client.responses.get(status, "error"), message


def _retry_after(value: str) -> float | None:
    """Seconds to wait from a Retry-After header, in either of its forms
    (RFC 9110 section 10.2.3: "HTTP-date / delay-seconds"); None when it is
    neither."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # RFC 9110: HTTP-date is always GMT
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def classify(exc: BaseException) -> Failure:
    """A Failure for any exception a Google call may raise."""
    if isinstance(exc, HttpError):
        status, reason, message = _http_error_parts(exc)
        header = exc.resp.get("retry-after") if hasattr(exc.resp, "get") else None
        retry_after = _retry_after(header) if header else None
        retryable = status == 429 or status >= 500 or (status == 403 and reason in RATE_REASONS)
        return Failure(status, reason, message, retryable, retry_after)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return Failure(None, "timeout", str(exc) or "request timed out", True)
    if isinstance(exc, (ConnectionError, http.client.HTTPException, httplib2.HttpLib2Error, OSError)):
        return Failure(None, "connectionError", f"{type(exc).__name__}: {exc}", True)
    return Failure(None, type(exc).__name__, str(exc), False)


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: try n waits up to
    ``base * 2**n`` (capped), and never less than a server's Retry-After;
    one longer than the cap is not retried in this run."""

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 32.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep

    def waits_too_long(self, failure: Failure) -> bool:
        """Google asked for a longer wait than this policy may sleep: calling
        earlier would only be refused again (and count against the quota),
        so the attempt ends and a later run tries again."""
        return failure.retry_after is not None and failure.retry_after > self.max_delay

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        wait = self.rng.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait

    def call(self, fn: Callable[[], T], on_retry: Callable[[Failure, int], None] | None = None) -> T:
        """Run ``fn`` until it succeeds or fails permanently / too often;
        the last exception propagates (classify it to know why)."""

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            failure = classify(exc) if exc else None
            return self.delay(state.attempt_number - 1, failure.retry_after if failure else None)

        def before_sleep(state: RetryCallState) -> None:
            if on_retry and state.outcome is not None:
                on_retry(classify(state.outcome.exception()), state.attempt_number)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait,
            retry=retry_if_exception(lambda e: classify(e).retryable and not self.waits_too_long(classify(e))),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(fn)
