"""What makes two requests the same delivery (so the second replays the
first's answer instead of running the job again).

A delivery is identified by what its credential *signs*, never by a header
anyone can set:

- QStash: the verified JWT's ``jti`` (each token is unique; a token without
  one is identified by its own hash). QStash re-signs every retry of a
  message — new token, same ``Upstash-Message-Id`` — so the message id,
  taken only from a request whose token verified, is a second key that
  finds the first attempt's answer;
- Vercel: the event id inside the signed body;
- bearer callers: an optional ``Idempotency-Key`` header.

Every key is scoped by the target, the caller and the SHA-256 of the raw
body (and, when recorded, the job and the database it ran on): a message id
or idempotency key sent with another target or another body is another
delivery, never a way to fetch someone else's answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .errors import BadRequest

MAX_IDEMPOTENCY_KEY = 255


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Delivery:
    source: str  # "qstash" | "vercel" | "bearer"
    key: str  # what was signed: jti, event id, idempotency key
    scope: str  # target, caller and body hash
    message_id: str | None = None  # QStash only: the same on each retry of one message

    @classmethod
    def of(cls, source: str, key: str, *, target: str, caller: str, body: bytes, message_id: str | None = None) -> "Delivery":
        scope = _digest(target, caller, hashlib.sha256(body).hexdigest())
        return cls(source, key, scope, message_id)

    def record_key(self, job: str, target: str) -> str:
        """The row of this delivery's run of ``job`` on database ``target``."""
        return _digest("delivery", self.source, self.scope, self.key, job, target)

    def message_key(self, job: str, target: str) -> str | None:
        """The key every attempt of one QStash message shares."""
        return _digest("message", self.source, self.scope, self.message_id, job, target) if self.message_id else None


def idempotency_key(value: str | None) -> str | None:
    """A caller's ``Idempotency-Key`` header: 1-255 visible ASCII characters,
    bare or as the IETF draft's quoted string (``"8e03978e-…"``). No comma:
    a server joins a header sent twice with one, and two keys are no key."""
    if value is None:
        return None
    key = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not all(33 <= ord(c) <= 126 and c not in ',"' for c in key):
        raise BadRequest(f"Idempotency-Key must be one value of 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters (no comma, no quote)")
    return key
