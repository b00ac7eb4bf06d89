"""Auth on every target: every missing, expired, replayed, wrong-key,
wrong-URL or tampered QStash signature, bad bearer, forged Vercel signature
and forged Google channel → 401 with a JSON error, and nothing ran.

Each request carries a *valid* body for its target, so a credential accepted
by mistake would really run something (and answer 200, not 401).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta
from unittest import mock

import jwt
import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings, strategies as st

from safesync.functions.main import TARGETS
from safesync.shared.auth import QSTASH_LEEWAY_S
from tests import sentinels
from tests.qstash_signer import qstash_headers, sign

from .conftest import BEARER
from .inputs import INJECTIONS
from .scale import SEED, pick
from .test_bad_input_http import rejected

AREA = "auth"
CURRENT = sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"]
NEXT = sentinels.SECRETS["QSTASH_NEXT_SIGNING_KEY"]
VALID_BODY = {
    "backup": {"action": "list"},
    "content_sync": {"mode": "compare"},
    "staging_clone": {"dry_run": True},
    "validate": {"db": "prod"},
    "calendar_sync": {"action": "status"},
    "status": {},
    "migrate": {"action": "plan"},
    "calendar_notify": {},
}


def url_of(target: str) -> str:
    return f"{sentinels.PUBLIC_URL}/{target}"


def _flip(text: str, index: int) -> str:
    ch = text[index]
    return text[:index] + ("A" if ch != "A" else "B") + text[index + 1:]


def qstash_cases(target: str, body: bytes) -> dict[str, dict[str, str]]:
    """Header sets that must all be refused."""
    url = url_of(target)
    good = sign(CURRENT, url, body)
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "sub": url_of("backup") if target != "backup" else url_of("status")}).encode()).decode().rstrip("=")
    none_alg = jwt.encode(claims, key="", algorithm="none") if "none" in jwt.algorithms.get_default_algorithms() else "e30.e30."
    other = "status" if target != "status" else "backup"
    tokens = {
        "wrong key": sign("not-the-key", url, body),
        "expired": sign(CURRENT, url, body, now=time.time() - 400, ttl=300),
        "not valid yet": sign(CURRENT, url, body, now=time.time() + 120),
        "URL of another target": sign(CURRENT, url_of(other), body),
        "URL of another host": sign(CURRENT, f"https://evil.example.test/{target}", body),
        "http instead of https": sign(CURRENT, url.replace("https://", "http://"), body),
        "URL with a query added": sign(CURRENT, url + "?x=1", body),
        "signature byte flipped": f"{header}.{payload}.{_flip(signature, len(signature) // 2)}",
        "claims rewritten, old signature": f"{header}.{forged_payload}.{signature}",
        "signature stripped": f"{header}.{payload}.",
        "alg none": none_alg,
        "HS384 with the right key": jwt.encode({**claims}, CURRENT, algorithm="HS384"),
        "body of another request": sign(CURRENT, url, body + b" "),
        "no body claim": sign(CURRENT, url, body, body=None),
        "no exp claim": sign(CURRENT, url, body, exp=None),
        "no sub claim": sign(CURRENT, url, body, sub=None),
        "wrong issuer": sign(CURRENT, url, body, iss="Downstash"),
        "exp as text": sign(CURRENT, url, body, exp="tomorrow"),
        "not a JWT": "hello",
        "two tokens": good + "," + good,
    }
    return {name: {"Upstash-Signature": token, "Upstash-Message-Id": f"msg_{name}", "Content-Type": "application/json"} for name, token in tokens.items()}


def bearer_cases() -> dict[str, dict[str, str]]:
    api, admin = sentinels.SECRETS["SAFESYNC_API_TOKEN"], sentinels.SECRETS["SAFESYNC_ADMIN_TOKEN"]
    return {
        "no credentials": {},
        "wrong bearer": {"Authorization": "Bearer wrong"},
        "bearer with one more character": {"Authorization": f"Bearer {api}x"},
        "bearer missing its last character": {"Authorization": f"Bearer {admin[:-1]}"},
        "bearer of another case": {"Authorization": f"Bearer {api.upper()}"},
        "token without scheme": {"Authorization": api},
        "Basic with the token": {"Authorization": "Basic " + base64.b64encode(f"x:{api}".encode()).decode()},
        "token in another header": {"X-Api-Key": api},
        "QStash signing key as bearer": {"Authorization": f"Bearer {CURRENT}"},
        "Vercel secret as bearer": {"Authorization": f"Bearer {sentinels.SECRETS['VERCEL_WEBHOOK_SECRET']}"},
    }


def vercel_cases(body: bytes) -> dict[str, dict[str, str]]:
    secret = sentinels.SECRETS["VERCEL_WEBHOOK_SECRET"]
    return {
        "Vercel signature with the wrong secret": {"x-vercel-signature": hmac.new(b"wrong", body, hashlib.sha1).hexdigest()},
        "Vercel signature of another body": {"x-vercel-signature": hmac.new(secret.encode(), body + b"x", hashlib.sha1).hexdigest()},
        "Vercel SHA-256 instead of SHA-1": {"x-vercel-signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()},
    }


@pytest.mark.parametrize("target", TARGETS)
def test_every_bad_credential_is_401(shared_world, tally, target: str) -> None:
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()
    body = json.dumps(VALID_BODY[target]).encode()
    cases = {**qstash_cases(target, body), **bearer_cases(), **vercel_cases(body)}
    for name, headers in cases.items():
        response = client.post(f"/{target}", data=body, headers=headers)
        ok, where = rejected(response)
        t.check(ok and response.status_code == 401, f"POST /{target} with {name} → {where}")
    if target != "calendar_notify":
        # a Vercel signature made with the right secret is only a credential for backup
        secret = sentinels.SECRETS["VERCEL_WEBHOOK_SECRET"].encode()
        headers = {"x-vercel-signature": hmac.new(secret, body, hashlib.sha1).hexdigest()}
        response = client.post(f"/{target}", data=body, headers=headers)
        if target != "backup":
            ok, where = rejected(response)
            t.check(ok and response.status_code == 401, f"POST /{target} with a genuine Vercel signature → {where}")
    t.unchanged(before, shared_world.state(), f"/{target} after {len(cases)} bad credentials")


def test_forged_google_channels_are_401(shared_world, tally) -> None:
    """calendar_notify trusts only a channel it opened and that channel's token."""
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()

    @seed(SEED)
    @settings(max_examples=pick(15, 60, 300), deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(
        # (no CR/LF: a header value cannot carry one over HTTP; clients refuse to send it)
        channel=st.sampled_from([i for i in INJECTIONS if not set(i) & {"\r", "\n"}]) | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80),
        token=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80),
        state=st.sampled_from(["exists", "sync", "not_exists", "'; drop table calendar.events; --"]),
        bearer=st.booleans(),
    )
    @example(channel="prod\x00", token="t", state="exists", bearer=False)  # a NUL byte must not reach a query
    def run(channel, token, state, bearer):
        headers = {"X-Goog-Channel-ID": channel, "X-Goog-Channel-Token": token, "X-Goog-Resource-State": state,
                   "X-Goog-Resource-ID": "r1", **(BEARER if bearer else {})}
        response = client.post("/calendar_notify", data=b"", headers=headers)
        ok, where = rejected(response)
        t.check(ok and response.status_code == 401, f"POST /calendar_notify channel={channel!r} token={token[:20]!r} → {where}")

    run()
    t.unchanged(before, shared_world.state(), "after forged Google channels")


class _Later(datetime):
    """PyJWT's clock, moved on past a 1 s token's ``exp`` and our leeway."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return datetime.now(tz) + timedelta(seconds=1 + QSTASH_LEEWAY_S + 1)


def test_a_valid_qstash_request_replayed_after_its_exp_is_401(shared_world, tally) -> None:
    """Accepted while valid (the body is invalid, so 400: auth passed and
    nothing ran), refused once ``exp`` + leeway has passed — same bytes."""
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()
    body = b'{"reliability": "replay"}'
    sent = {}
    for target in TARGETS:
        if target == "calendar_notify":
            continue
        key = CURRENT if len(sent) % 2 == 0 else NEXT  # both signing keys
        headers = qstash_headers(key, url_of(target), body, ttl=1)
        first = client.post(f"/{target}", data=body, headers=headers)
        t.check(first.status_code != 401, f"POST /{target} with a fresh QStash signature → {first.status_code} {first.get_data()[:120]!r}")
        sent[target] = headers
    with mock.patch("jwt.api_jwt.datetime", _Later):  # the clock the verifier reads is past exp + leeway (no 12 s sleep)
        for target, headers in sent.items():
            again = client.post(f"/{target}", data=body, headers=headers)
            ok, where = rejected(again)
            t.check(ok and again.status_code == 401 and "expired" in again.get_json()["error"], f"POST /{target} replayed after exp → {where}")
    t.unchanged(before, shared_world.state(), "after replays")
