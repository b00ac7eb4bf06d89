"""QStash, Vercel and bearer authentication against signed vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

import jwt
import pytest

from safesync.shared.auth import authenticate, verify_qstash
from safesync.shared.errors import AuthError
from tests import sentinels
from tests.qstash_signer import qstash_headers, sign

URL = sentinels.PUBLIC_URL + "/backup"
BODY = json.dumps({"action": "create", "db": "prod"}).encode()
CURRENT = sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"]
NEXT = sentinels.SECRETS["QSTASH_NEXT_SIGNING_KEY"]


def auth(headers: dict[str, str], body: bytes = BODY, path: str = "/backup", **kw):
    return authenticate(headers, body, path=path, **kw)


@pytest.mark.parametrize("key", [CURRENT, NEXT], ids=["current-key", "next-key"])
def test_qstash_signature_with_either_key_is_accepted(key: str) -> None:
    principal = auth(qstash_headers(key, URL, BODY, message_id="msg_1"))
    assert principal.kind == "qstash"
    assert principal.message_id == "msg_1"


def test_both_keys_accept_the_same_vector_and_padding_is_ignored() -> None:
    padded = base64.urlsafe_b64encode(hashlib.sha256(BODY).digest()).decode()  # with '='
    assert padded.endswith("=")
    for key in (CURRENT, NEXT):
        token = sign(key, URL, BODY, body=padded)
        assert verify_qstash(token, BODY, URL, [CURRENT, NEXT])["sub"] == URL


def test_trailing_slash_on_public_url_is_tolerated(monkeypatch) -> None:
    monkeypatch.setenv("SAFESYNC_PUBLIC_URL", sentinels.PUBLIC_URL + "/")
    assert auth(qstash_headers(CURRENT, URL, BODY)).kind == "qstash"


@pytest.mark.parametrize("public", [sentinels.PUBLIC_URL + "\n", " " + sentinels.PUBLIC_URL + "/ \n"], ids=["newline", "spaces"])
def test_whitespace_around_the_public_url_is_read_as_schedules_read_it(monkeypatch, public: str) -> None:
    """``safesync schedules`` strips SAFESYNC_PUBLIC_URL to build QStash's
    destinations; auth compared the token's sub with the unstripped value,
    so a trailing newline made every scheduled delivery a 401."""
    from pathlib import Path

    from safesync.functions.schedules import load_schedules

    monkeypatch.setenv("SAFESYNC_PUBLIC_URL", public)
    shipped = Path(__file__).resolve().parent.parent / "infra" / "schedules.toml"
    backup = next(d for d in load_schedules(shipped, os.environ).schedules if d.target == "backup")
    assert backup.destination == URL  # what QStash signs as sub
    assert auth(qstash_headers(CURRENT, backup.destination, BODY)).kind == "qstash"


def _token_alg_none() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    now = int(time.time())
    claims = {"iss": "Upstash", "sub": URL, "exp": now + 300, "nbf": now, "body": base64.urlsafe_b64encode(hashlib.sha256(BODY).digest()).decode()}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}."


@pytest.mark.parametrize(
    "case, make_headers, expected",
    [
        ("tampered body", lambda: qstash_headers(CURRENT, URL, BODY + b" "), "does not match the body"),
        ("wrong url", lambda: qstash_headers(CURRENT, sentinels.PUBLIC_URL + "/validate", BODY), "another URL"),
        ("http url", lambda: qstash_headers(CURRENT, URL.replace("https", "http"), BODY), "another URL"),
        ("sub with a trailing slash", lambda: qstash_headers(CURRENT, URL + "/", BODY), "another URL"),
        ("sub with a double slash", lambda: qstash_headers(CURRENT, URL.replace("/backup", "//backup"), BODY), "another URL"),
        ("sub of another case", lambda: qstash_headers(CURRENT, URL.upper(), BODY), "another URL"),
        ("expired", lambda: qstash_headers(CURRENT, URL, BODY, now=time.time() - 600), "expired"),
        ("not yet valid", lambda: qstash_headers(CURRENT, URL, BODY, now=time.time() + 600), "not valid yet"),
        ("wrong key", lambda: qstash_headers("some-other-key", URL, BODY), "wrong key or tampered"),
        ("no body claim", lambda: {"Upstash-Signature": sign(CURRENT, URL, BODY, body=None)}, "lacks the 'body' claim"),
        ("wrong issuer", lambda: {"Upstash-Signature": sign(CURRENT, URL, BODY, iss="Evil")}, "wrong issuer"),
        ("alg none", lambda: {"Upstash-Signature": _token_alg_none()}, "wrong key or tampered"),
        ("HS512", lambda: {"Upstash-Signature": jwt.encode({"iss": "Upstash", "sub": URL, "exp": int(time.time()) + 60, "nbf": int(time.time()), "body": "x"}, CURRENT, algorithm="HS512")}, "wrong key or tampered"),
        ("garbage", lambda: {"Upstash-Signature": "not-a-jwt"}, "wrong key or tampered"),
        ("missing header", lambda: {}, "no credentials"),
        ("bad bearer", lambda: {"Authorization": "Bearer nope"}, "invalid bearer token"),
        ("basic auth", lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer"),
        ("empty bearer", lambda: {"Authorization": "Bearer "}, "must be 'Bearer"),
    ],
)
def test_bad_credentials_are_rejected(case: str, make_headers, expected: str) -> None:
    with pytest.raises(AuthError) as info:
        auth(make_headers())
    assert expected in info.value.message
    assert info.value.status == 401


def test_small_clock_skew_is_tolerated() -> None:
    # nbf 5 s in the future (the caller's clock runs ahead) is within the leeway.
    assert auth(qstash_headers(CURRENT, URL, BODY, now=time.time() + 5)).kind == "qstash"


def test_qstash_without_public_url_is_rejected(monkeypatch) -> None:
    monkeypatch.delenv("SAFESYNC_PUBLIC_URL")
    with pytest.raises(AuthError, match="SAFESYNC_PUBLIC_URL"):
        auth(qstash_headers(CURRENT, URL, BODY))


def test_bearer_tokens_and_scopes() -> None:
    api = auth({"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}"})
    admin = auth({"Authorization": f"bearer {sentinels.SECRETS['SAFESYNC_ADMIN_TOKEN']}"})
    assert api.kind == "bearer" and not api.is_admin
    assert admin.is_admin
    assert sentinels.SECRETS["SAFESYNC_API_TOKEN"] not in api.identity


def test_vercel_signature_only_where_allowed() -> None:
    secret = sentinels.SECRETS["VERCEL_WEBHOOK_SECRET"]
    good = hmac.new(secret.encode(), BODY, hashlib.sha1).hexdigest()
    assert auth({"x-vercel-signature": good}, allow_vercel=True).kind == "vercel"
    with pytest.raises(AuthError):
        auth({"x-vercel-signature": good}, allow_vercel=False)
    with pytest.raises(AuthError, match="Vercel signature does not match"):
        auth({"x-vercel-signature": good}, body=BODY + b"x", allow_vercel=True)


def test_a_failed_qstash_signature_still_allows_a_valid_bearer() -> None:
    headers = {**qstash_headers("wrong", URL, BODY), "Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"}
    assert auth(headers).kind == "bearer"


def test_the_signer_follows_qstash_docs_and_the_sdk_receiver_accepts_it() -> None:
    """Upstash docs (features/security, howto/signature, howto/receiving): an
    HS256 JWT with iss/sub/exp/nbf/iat/jti/body, a 5-minute lifetime, body =
    base64url SHA-256 *with* padding (the documented example ends in "="),
    headers User-Agent Upstash-QStash, Upstash-Message-Id, Upstash-Retried
    from 0; each retry re-signed under the same message id."""
    from qstash import Receiver

    from tests.qstash_signer import QStashMessage

    message = QStashMessage(CURRENT, URL, BODY, schedule_id="scd_1")
    first, second = message.attempt(), message.attempt()
    header = jwt.get_unverified_header(first["Upstash-Signature"])
    claims = jwt.decode(first["Upstash-Signature"], options={"verify_signature": False})
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert set(claims) == {"iss", "sub", "exp", "nbf", "iat", "jti", "body"}
    assert claims["iss"] == "Upstash" and claims["sub"] == URL and claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"]
    assert claims["jti"].startswith("jwt_") and len(claims["body"]) == 44 and claims["body"].endswith("=")
    assert first["User-Agent"] == "Upstash-QStash" and first["Upstash-Schedule-Id"] == "scd_1"
    assert (first["Upstash-Retried"], second["Upstash-Retried"]) == ("0", "1")
    assert first["Upstash-Message-Id"] == second["Upstash-Message-Id"] and first["Upstash-Message-Id"].startswith("msg_")
    assert first["Upstash-Signature"] != second["Upstash-Signature"]
    for headers in (first, second):
        Receiver(CURRENT, NEXT).verify(signature=headers["Upstash-Signature"], body=BODY.decode(), url=URL)
        principal = auth(headers)
        assert principal.message_id == first["Upstash-Message-Id"] and principal.token_id.startswith("jwt_")


def test_a_message_id_is_only_taken_from_a_verified_token() -> None:
    forged = {**qstash_headers("not-the-key", URL, BODY, message_id="msg_victim"), "Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"}
    principal = auth(forged)
    assert principal.kind == "bearer" and principal.message_id is None and principal.token_id is None


def test_secrets_with_a_trailing_newline_still_match(monkeypatch) -> None:
    """A token, signing key or webhook secret pasted or read from a secret
    file with a trailing newline: compared unstripped, nothing could ever
    match it (status sessions, which strip, still worked)."""
    for var in ("SAFESYNC_API_TOKEN", "SAFESYNC_ADMIN_TOKEN", "QSTASH_CURRENT_SIGNING_KEY", "VERCEL_WEBHOOK_SECRET"):
        monkeypatch.setenv(var, sentinels.SECRETS[var] + "\n")
    assert auth({"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}"}).kind == "bearer"
    assert auth({"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_ADMIN_TOKEN']}"}).is_admin
    assert auth(qstash_headers(CURRENT, URL, BODY)).kind == "qstash"
    good = hmac.new(sentinels.SECRETS["VERCEL_WEBHOOK_SECRET"].encode(), BODY, hashlib.sha1).hexdigest()
    assert auth({"x-vercel-signature": good}, allow_vercel=True).kind == "vercel"
