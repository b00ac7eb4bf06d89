"""Browser sessions for the status page: signed, expiring, never a token.

A person types a token once into the login form (a POST body, so it is in no
URL and no access log); what the browser keeps is a session cookie
``v1.<kind>.<expires>.<nonce>.<mac>``: an HMAC-SHA256 under a key derived
from the token that logged in, so rotating that token ends its sessions and
nothing on the server has to remember them. ``safesync status --link``
signs a one-time code the same way under another purpose (a link is never a
cookie, a cookie never a link); the status page turns it into a session on
first use and records the use, so a copied link does not work twice.

A session grants one thing: reading the status page (scope ``status``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from typing import Mapping

from .auth import Principal, configured_secret, same_text
from .errors import AuthError

SESSION = "session"
LINK = "link"
TTL_S = {SESSION: 12 * 3600, LINK: 10 * 60}
TOKENS = {"api": "SAFESYNC_API_TOKEN", "admin": "SAFESYNC_ADMIN_TOKEN"}
VERSION = "v1"


@dataclass(frozen=True)
class Grant:
    """A verified session or link."""

    purpose: str
    kind: str  # which token signed it: "api" | "admin"
    expires: int  # unix seconds
    nonce: str

    @property
    def principal(self) -> Principal:
        """Who reads the page: a stable, non-secret identity per grant."""
        identity = hashlib.sha256(self.nonce.encode()).hexdigest()[:12]
        return Principal(self.purpose, f"{self.purpose}:{identity}", frozenset({"status"}))


def _mac(purpose: str, token: str, message: str) -> str:
    key = hmac.new(token.encode(), f"safesync status {purpose} {VERSION}".encode(), hashlib.sha256).digest()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _token(kind: str, env: Mapping[str, str]) -> str | None:
    return configured_secret(env, TOKENS[kind]) or None


def issue(purpose: str, kind: str, *, env: Mapping[str, str] | None = None, now: float | None = None) -> str:
    """A signed session (cookie value) or link code for the ``kind`` token."""
    env = env if env is not None else os.environ
    token = _token(kind, env)
    if token is None:
        raise AuthError(f"{TOKENS[kind]} is not set: nothing to sign a status {purpose} with")
    expires = int((now if now is not None else time.time()) + TTL_S[purpose])
    message = f"{VERSION}.{kind}.{expires}.{secrets.token_hex(16)}"
    return f"{message}.{_mac(purpose, token, message)}"


def verify(purpose: str, value: str, *, env: Mapping[str, str] | None = None, now: float | None = None) -> Grant:
    """The grant ``value`` carries, or AuthError saying why not (a cookie or
    a ``?link=`` is whatever the browser sent: ``….café`` is a 401 too)."""
    env = env if env is not None else os.environ
    parts = value.split(".")
    if len(parts) != 5 or parts[0] != VERSION or parts[1] not in TOKENS or not (parts[2].isascii() and parts[2].isdigit()):
        raise AuthError(f"not a status {purpose}")
    _, kind, expires, nonce, mac = parts
    token = _token(kind, env)
    if token is None or not same_text(_mac(purpose, token, ".".join(parts[:4])), mac):
        raise AuthError(f"status {purpose} not valid (signed with another token?)")
    if int(expires) <= (now if now is not None else time.time()):
        raise AuthError(f"status {purpose} expired")
    return Grant(purpose, kind, int(expires), nonce)


def kind_of(principal: Principal) -> str:
    """Which token a bearer principal logged in with."""
    return "admin" if principal.is_admin else "api"


def link_kind(env: Mapping[str, str] | None = None) -> str:
    """The token ``safesync status --link`` signs with: the API token, or
    the admin token where only that one is set."""
    env = env if env is not None else os.environ
    if _token("api", env):
        return "api"
    if _token("admin", env):
        return "admin"
    raise AuthError("set SAFESYNC_API_TOKEN (the value the server has) to sign a status link")
