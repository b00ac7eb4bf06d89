"""Who is calling: QStash signatures, Vercel webhook signatures, bearer tokens.

Checked in that order; the first credential present and valid wins, and no
valid credential means 401 before any job code runs. QStash tokens are
verified with PyJWT directly rather than through ``qstash.Receiver``, whose
clock tolerance is ignored, which raises KeyError on a token without a
``body`` claim, and whose failures all read the same.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Mapping

from .errors import AuthError, BadRequest

QSTASH_LEEWAY_S = 10
QSTASH_KEYS = ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    kind: str  # "qstash" | "vercel" | "bearer"
    identity: str  # stable, non-secret: used for rate limits and reports
    scopes: frozenset[str] = field(default_factory=frozenset)
    message_id: str | None = None  # QStash message id (same on each retry); only from a verified token
    schedule_id: str | None = None
    token_id: str | None = None  # what the verified credential signed: the QStash token's jti

    @property
    def is_qstash(self) -> bool:
        return self.kind == "qstash"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def _b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def verify_qstash(token: str, body: bytes | None, url: str, keys: list[str], *, leeway: int = QSTASH_LEEWAY_S) -> dict:
    """Verify an ``Upstash-Signature`` JWT against any of ``keys``.

    Returns the claims; raises AuthError naming what was wrong. ``body``
    None checks every claim but the body hash: only ``qstash_sender`` asks
    that, for a body never read.
    """
    import jwt  # lazy: only QStash requests need it

    if not keys:
        raise AuthError("QStash signature present but no signing keys are configured")
    # First find the key whose signature matches, then check the claims with
    # it: an expired token signed with the current key must say "expired",
    # not "wrong key" because the next key also failed.
    key = next((k for k in keys if _signed_with(token, k)), None)
    if key is None:
        raise AuthError("QStash signature invalid (wrong key or tampered token)")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            issuer="Upstash",
            leeway=leeway,
            options={"require": ["iss", "sub", "exp", "nbf", "body"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("QStash signature expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("QStash signature not valid yet") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"QStash signature lacks the {exc.claim!r} claim") from None
    except jwt.InvalidIssuerError:
        raise AuthError("QStash signature has the wrong issuer") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"QStash signature invalid ({type(exc).__name__})") from None
    if claims.get("sub") != url:  # exact, as QStash's Receiver compares it
        raise AuthError("QStash signature is for another URL")
    body_claim = claims.get("body")
    if body is None:
        return claims
    if not isinstance(body_claim, str) or body_claim.rstrip("=") != _b64url_nopad(hashlib.sha256(body).digest()):
        raise AuthError("QStash signature does not match the body")
    return claims


def _signed_with(token: str, key: str) -> bool:
    """True when ``token`` is an HS256 JWT signed with ``key`` (claims unchecked)."""
    import jwt

    try:
        jwt.decode(token, key, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_iss": False})
        return True
    except jwt.InvalidTokenError:
        return False


def same_text(expected: str, given: str) -> bool:
    """Constant-time equality of two texts (a secret, a signature, a MAC),
    as UTF-8 bytes: ``hmac.compare_digest`` raises TypeError on a ``str``
    holding non-ASCII characters, and what a request sends is whatever its
    sender chose (header bytes arrive as Latin-1 text), so a forged
    ``café`` must be a mismatch, never a 500."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogateescape"), given.encode("utf-8", "surrogateescape"))


def configured_secret(env: Mapping[str, str], name: str) -> str:
    """A secret from the environment without the whitespace around it (a
    secret file's or a pasted value's trailing newline): with it no
    credential could ever match, while status sessions, which strip it,
    would still work — one reading for every secret ("" when unset)."""
    return env.get(name, "").strip()


def verify_vercel(signature: str, body: bytes, secret: str | None) -> None:
    """``x-vercel-signature``: hex HMAC-SHA1 of the raw body."""
    if not secret:
        raise AuthError("Vercel signature present but VERCEL_WEBHOOK_SECRET is not configured")
    expected = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    if not same_text(expected, signature.strip().lower()):
        raise AuthError("Vercel signature does not match the body")


MAX_HEADER_ID = 256  # a provider's id or token in a header: far less


def short_printable(value: str) -> bool:
    """Whether an unsigned header value we compare or record (a QStash
    message id, a Google channel's resource state) is short printable text.
    Anything else — U+0000 above all, which PostgreSQL cannot store — failed
    the delivery's bookkeeping after the job had run."""
    return len(value) <= MAX_HEADER_ID and value.isprintable()


def _qstash_id_header(headers: Mapping[str, str], name: str) -> str | None:
    """A QStash id header (``msg_…``, ``scd_…``), or None when absent. It is
    not signed, and goes into the run's report and the delivery row: not
    ``short_printable``, it is a 400 before anything runs."""
    value = headers.get(name) or None
    if value is not None and not short_printable(value):
        raise BadRequest(f"{name} must be printable text of at most {MAX_HEADER_ID} characters")
    return value


def _bearer_principal(header: str, env: Mapping[str, str]) -> Principal:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization header must be 'Bearer <token>'")
    matched: Principal | None = None
    # Compare against every configured token (constant time each, no early exit).
    for var, scopes in (("SAFESYNC_API_TOKEN", {"run"}), ("SAFESYNC_ADMIN_TOKEN", {"run", "admin"})):
        configured = configured_secret(env, var)
        if configured and same_text(configured, token):
            identity = "bearer:" + hashlib.sha256(token.encode()).hexdigest()[:12]
            matched = matched or Principal("bearer", identity, frozenset(scopes))
    if matched is None:
        raise AuthError("invalid bearer token")
    return matched


def _verify_qstash_request(signature: str, body: bytes | None, *, path: str, query: str, env: Mapping[str, str]) -> dict:
    """The claims of a request's QStash token, checked against the URL
    QStash was given: ``SAFESYNC_PUBLIC_URL`` + path (+ query), never the
    request's own URL (behind Cloud Run that says http://)."""
    # stripped as schedules, status links and the calendar read it: with a
    # trailing newline (a secret file), QStash was pointed at the clean URL
    # and every delivery then failed "for another URL"
    public = env.get("SAFESYNC_PUBLIC_URL", "").strip().rstrip("/")
    if not public:
        raise AuthError("QStash signature present but SAFESYNC_PUBLIC_URL is not configured")
    url = public + (path if path != "/" else "") + (f"?{query}" if query else "")
    keys = [key for key in (configured_secret(env, k) for k in QSTASH_KEYS) if key]
    return verify_qstash(signature, body, url, keys)


def qstash_sender(headers: Mapping[str, str], body: bytes | None, *, path: str, query: str = "", env: Mapping[str, str] | None = None) -> Principal | None:
    """QStash, when the request carries a QStash token that verifies — in
    every claim but the body hash when ``body`` is None (too large to read,
    or not read yet) — else None. Only for answering a refusal made before
    authentication so that QStash stops re-sending a request that can never
    succeed: the principal has no scope, it runs nothing."""
    signature = headers.get("Upstash-Signature")
    if not signature:
        return None
    try:
        _verify_qstash_request(signature, body, path=path, query=query, env=env if env is not None else os.environ)
    except AuthError:
        return None
    return Principal("qstash", "qstash")


def authenticate(
    headers: Mapping[str, str],
    body: bytes,
    *,
    path: str,
    query: str = "",
    allow_vercel: bool = False,
    env: Mapping[str, str] | None = None,
) -> Principal:
    """Authenticate a request or raise AuthError (→ 401)."""
    env = env if env is not None else os.environ
    failures: list[str] = []

    signature = headers.get("Upstash-Signature")
    if signature:
        try:
            claims = _verify_qstash_request(signature, body, path=path, query=query, env=env)
            jti = claims.get("jti")
            return Principal(
                "qstash",
                "qstash",
                frozenset({"run"}),
                message_id=_qstash_id_header(headers, "Upstash-Message-Id"),
                schedule_id=_qstash_id_header(headers, "Upstash-Schedule-Id"),
                # every token is unique; one without a jti is identified by itself
                token_id=jti if isinstance(jti, str) and jti else "sha256:" + hashlib.sha256(signature.encode()).hexdigest(),
            )
        except AuthError as exc:
            failures.append(exc.message)

    vercel = headers.get("x-vercel-signature")
    if vercel and allow_vercel:
        try:
            verify_vercel(vercel, body, configured_secret(env, "VERCEL_WEBHOOK_SECRET"))
            return Principal("vercel", "vercel", frozenset({"webhook"}))
        except AuthError as exc:
            failures.append(exc.message)

    authorization = headers.get("Authorization")
    if authorization:
        try:
            return _bearer_principal(authorization, env)
        except AuthError as exc:
            failures.append(exc.message)

    raise AuthError(failures[0] if failures else "no credentials: send a QStash signature or a bearer token")
