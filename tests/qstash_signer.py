"""Sign and send requests exactly as QStash does.

What QStash documents (Upstash docs: "Request Signing" / features/security,
howto/signature, howto/receiving, features/retry):

- ``Upstash-Signature``: an HS256 JWT (header ``{"alg":"HS256","typ":"JWT"}``)
  signed with the current signing key, claims ``iss`` = ``Upstash``, ``sub`` =
  the destination URL, ``iat`` = ``nbf`` = now, ``exp`` = now + 5 minutes,
  ``jti`` = a unique id of the token (``jwt_…``), ``body`` = base64url (RFC
  4648, with its ``=`` padding, as in the documented example) of the SHA-256
  of the raw body;
- headers besides it: ``User-Agent: Upstash-QStash``, the original
  ``Content-Type``, ``Upstash-Message-Id`` (``msg_…``), ``Upstash-Retried``
  (how often this message was retried so far, from 0), ``Upstash-Schedule-Id``
  for a scheduled message;
- a non-2xx answer is retried later (delays of seconds to hours): each attempt
  carries the same message id and a *new* token — the old one would have
  expired — with ``Upstash-Retried`` counting up.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import time
from dataclasses import dataclass, field

import jwt

TOKEN_LIFETIME_S = 300
_ID_ALPHABET = string.ascii_letters + string.digits


def body_hash(body: bytes) -> str:
    """The ``body`` claim: base64url of SHA-256, padded (the docs' example ends in ``=``)."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()


def _qstash_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(28))


def sign(key: str, url: str, payload: bytes, *, now: float | None = None, ttl: int = TOKEN_LIFETIME_S, **overrides) -> str:
    """The token QStash would send for ``payload`` delivered to ``url``;
    ``overrides`` replace claims (None removes one)."""
    now = time.time() if now is None else now
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": int(now + ttl),
        "nbf": int(now),
        "iat": int(now),
        "jti": _qstash_id("jwt_"),
        "body": body_hash(payload),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="HS256", headers={"typ": "JWT"})


def qstash_headers(key: str, url: str, body: bytes, *, message_id: str | None = None, retried: int = 0,
                   schedule_id: str | None = None, **overrides) -> dict[str, str]:
    """Every header of one delivery attempt."""
    headers = {
        "Upstash-Signature": sign(key, url, body, **overrides),
        "Upstash-Message-Id": message_id or _qstash_id("msg_"),
        "Upstash-Retried": str(retried),
        "User-Agent": "Upstash-QStash",
        "Content-Type": "application/json",
    }
    if schedule_id:
        headers["Upstash-Schedule-Id"] = schedule_id
    return headers


@dataclass
class QStashMessage:
    """One published message: ``attempt()`` gives the headers of its next
    delivery attempt — same message id, a freshly signed token each time."""

    key: str
    url: str
    body: bytes
    schedule_id: str | None = None
    message_id: str = field(default_factory=lambda: _qstash_id("msg_"))
    attempts: int = 0

    def attempt(self, **overrides) -> dict[str, str]:
        headers = qstash_headers(self.key, self.url, self.body, message_id=self.message_id, retried=self.attempts,
                                 schedule_id=self.schedule_id, **overrides)
        self.attempts += 1
        return headers
