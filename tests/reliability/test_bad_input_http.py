"""Bad input on every HTTP target: 4xx with a JSON ``error``, never a 500,
never a traceback, and every database (and storage, run reports aside)
exactly as it was.

The caller holds the *admin* token: the most powerful caller sending bad
input. Bodies come from ``inputs.py`` (invalid by construction), so a body
that slipped through validation would really run, and the fingerprints
would show it.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st

from safesync.functions.main import TARGETS

from .conftest import ADMIN, BEARER
from .inputs import bad_body, hostile_json, not_an_object
from .scale import SEED, pick

AREA = "bad input: HTTP"
EXAMPLES = pick(15, 60, 300)
HYPOTHESIS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],  # no shrinking: the note shows the input
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
METHODS = {"status": ("GET", "POST"), "calendar_sync": ("GET", "POST")}  # every other target: POST only


def rejected(response, *, head: bool = False) -> tuple[bool, str]:
    """(a clean 4xx?, description) — JSON body with an ``error`` string, no traceback."""
    text = response.get_data(as_text=True)
    where = f"{response.status_code} {text[:200]!r}"
    if not 400 <= response.status_code < 500:
        return False, where
    if head:
        return True, where
    try:
        payload = json.loads(text)
    except ValueError:
        return False, f"not JSON: {where}"
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, str) or not error:
        return False, f"no error string: {where}"
    if "Traceback" in text or 'File "' in text:
        return False, f"traceback in body: {where}"
    return True, where


@pytest.mark.parametrize("target", TARGETS)
def test_bad_bodies_are_4xx_and_change_nothing(shared_world, tally, target: str) -> None:
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()

    @seed(SEED)
    @HYPOTHESIS
    @given(case=bad_body(target))
    def run(case):
        what, body = case
        response = client.post(f"/{target}", data=json.dumps(body), headers={**ADMIN, "Content-Type": "application/json"})
        ok, where = rejected(response)
        t.check(ok, f"POST /{target} {json.dumps(body)[:200]} ({what}) → {where}")

    run()
    t.unchanged(before, shared_world.state(), f"/{target} after {EXAMPLES} bad bodies")


@pytest.mark.parametrize("target", TARGETS)
def test_bodies_that_are_not_json_objects_are_400(shared_world, tally, target: str) -> None:
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()
    expected = 401 if target == "calendar_notify" else 400  # its credentials are headers, checked first

    @seed(SEED)
    @HYPOTHESIS
    @given(raw=not_an_object, content_type=st.sampled_from(["application/json", "text/plain", None]))
    def run(raw: bytes, content_type):
        headers = {**BEARER, **({"Content-Type": content_type} if content_type else {})}
        response = client.post(f"/{target}", data=raw, headers=headers)
        ok, where = rejected(response)
        t.check(ok and response.status_code == expected, f"POST /{target} {raw[:80]!r} → {where}")

    run()
    t.unchanged(before, shared_world.state(), f"/{target} after non-object bodies")


@pytest.mark.parametrize("target", TARGETS)
def test_json_no_parser_may_take_is_400_naming_the_limit(shared_world, tally, target: str) -> None:
    """Nesting past the limit (top level or inside a field, arrays and
    objects), duplicate keys, 10⁶-digit and non-finite numbers, NaN, lone
    surrogates, invalid UTF-8 — each on a valid base body: 400 naming the
    limit, never a 500 (a RecursionError used to escape the parser)."""
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()
    expected = 401 if target == "calendar_notify" else 400  # its credentials are headers, checked first

    @seed(SEED)
    @HYPOTHESIS
    @given(case=hostile_json(target))
    def run(case):
        how, needle, raw = case
        response = client.post(f"/{target}", data=raw, headers={**ADMIN, "Content-Type": "application/json"})
        ok, where = rejected(response)
        ok = ok and response.status_code == expected and (expected == 401 or needle in response.get_json()["error"])
        t.check(ok, f"POST /{target} {how} {raw[:80]!r}… ({len(raw)} bytes) → {where}")

    run()
    t.unchanged(before, shared_world.state(), f"/{target} after hostile JSON")


@pytest.mark.parametrize("target", TARGETS)
def test_huge_bodies_are_413_before_parsing(shared_world, tally, target: str) -> None:
    """Over 1 MB: 413 whether or not the caller is authenticated, with or
    without a Content-Length (a streamed body is cut at the limit)."""
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()
    valid_prefix = b'{"action": "list", "pad": "'
    for size in (1_000_001, 1_500_000, 8_000_000):
        body = valid_prefix + b"x" * (size - len(valid_prefix) - 2) + b'"}'
        for headers in ({}, BEARER):
            response = client.post(f"/{target}", data=body, headers={**headers, "Content-Type": "application/json"})
            ok, where = rejected(response)
            t.check(ok and response.status_code == 413, f"POST /{target} {size} bytes, auth={bool(headers)} → {where}")
        streamed = client.open(f"/{target}", method="POST", input_stream=io.BytesIO(body), headers={**BEARER, "Content-Type": "application/json"})
        ok, where = rejected(streamed)
        t.check(ok and streamed.status_code == 413, f"POST /{target} {size} bytes streamed without Content-Length → {where}")
    t.unchanged(before, shared_world.state(), f"/{target} after huge bodies")


@pytest.mark.parametrize("target", TARGETS)
def test_wrong_methods_are_405(shared_world, tally, target: str) -> None:
    t = tally(AREA)
    client = shared_world.client()
    allowed = METHODS.get(target, ("POST",))
    # OPTIONS is left out: Flask answers it itself (200, Allow, empty body) without running a handler.
    for method in ("GET", "PUT", "PATCH", "DELETE", "HEAD"):
        if method in allowed or (method == "HEAD" and "GET" in allowed):
            continue
        for headers in ({}, BEARER):
            response = client.open(f"/{target}", method=method, data=b'{"action": "list"}', headers=headers)
            ok, where = rejected(response, head=method == "HEAD")
            t.check(ok and response.status_code == 405, f"{method} /{target} auth={bool(headers)} → {where}")


@pytest.mark.parametrize("target", TARGETS)
def test_missing_and_duplicated_headers(shared_world, tally, target: str) -> None:
    """Credentials missing, doubled or mangled: a clean 4xx, never a run.
    The body is invalid, so even an accepted credential ends in 400."""
    t = tally(AREA)
    client = shared_world.client()
    before = shared_world.state()
    token = BEARER["Authorization"]
    body = json.dumps({"action": "no-such-action", "mode": "no-such-mode", "unknown": 1})
    cases = {
        "no headers at all": [],
        "no Authorization": [("Content-Type", "application/json")],
        "Authorization twice (good, bad)": [("Authorization", token), ("Authorization", "Bearer wrong")],
        "Authorization twice (bad, good)": [("Authorization", "Bearer wrong"), ("Authorization", token)],
        "Authorization twice (good, good)": [("Authorization", token), ("Authorization", token)],
        "empty Authorization": [("Authorization", "")],
        "Bearer without token": [("Authorization", "Bearer")],
        "Basic scheme": [("Authorization", "Basic " + "dXNlcjpwYXNz")],
        "token with control characters": [("Authorization", token + "\x00")],
        "Upstash-Signature empty": [("Upstash-Signature", "")],
        "Upstash-Signature garbage": [("Upstash-Signature", "not.a.jwt")],
        "Upstash-Signature twice": [("Upstash-Signature", "a.b.c"), ("Upstash-Signature", "d.e.f")],
        "Upstash-Message-Id without signature": [("Upstash-Message-Id", "msg_1"), ("Authorization", token)],
        "x-vercel-signature garbage": [("x-vercel-signature", "zz")],
        "Content-Type twice": [("Content-Type", "application/json"), ("Content-Type", "text/plain"), ("Authorization", token)],
    }
    for name, headers in cases.items():
        response = client.post(f"/{target}", data=body, headers=headers)
        ok, where = rejected(response)
        t.check(ok, f"POST /{target} with {name} → {where}")
    t.unchanged(before, shared_world.state(), f"/{target} after header cases")


LAX_BOOLEANS = ["no", "yes", "false", "true", 0, 1, "0", "1", 1.0]
BOOLEAN_FIELDS = [
    ("backup", {"action": "prune"}, "dry_run"),
    ("staging_clone", {}, "dry_run"),
    ("calendar_sync", {"mode": "incremental"}, "force"),
    ("migrate", {"action": "plan"}, "skip_rehearsal"),
]


@pytest.mark.parametrize("target,base,field", BOOLEAN_FIELDS, ids=[f"{t}-{f}" for t, _, f in BOOLEAN_FIELDS])
def test_boolean_fields_take_only_json_booleans(world, tally, target: str, base: dict, field: str) -> None:
    """``"dry_run": "no"`` is a wrong type, not a request for a real run:
    every boolean field must be strict (backup's models are)."""
    t = tally(AREA)
    client = world.client()
    before = world.state()
    answers = []
    for value in LAX_BOOLEANS:
        response = client.post(f"/{target}", json={**base, field: value}, headers=ADMIN)
        ok, where = rejected(response)
        ok = ok and response.status_code == 400
        answers.append(ok)
        t.check(ok, f"POST /{target} {json.dumps({**base, field: value})} → {where}", strict=False)
    t.unchanged(before, world.state(), f"/{target} after non-boolean {field} values")
    assert all(answers), f"/{target} accepted a non-boolean {field}: see the notes"
