"""Sign requests exactly as QStash does (HS256 JWT in ``Upstash-Signature``)."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

import jwt


def body_hash(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")


def sign(key: str, url: str, payload: bytes, *, now: float | None = None, ttl: int = 300, **overrides) -> str:
    """The token QStash would send for ``payload`` delivered to ``url``;
    ``overrides`` replace claims (None removes one)."""
    now = time.time() if now is None else now
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": int(now + ttl),
        "nbf": int(now),
        "iat": int(now),
        "jti": uuid.uuid4().hex,
        "body": body_hash(payload),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="HS256")


def qstash_headers(key: str, url: str, body: bytes, *, message_id: str | None = None, **overrides) -> dict[str, str]:
    return {
        "Upstash-Signature": sign(key, url, body, **overrides),
        "Upstash-Message-Id": message_id or f"msg_{uuid.uuid4().hex}",
        "Content-Type": "application/json",
    }
