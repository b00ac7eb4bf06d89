"""Delivery semantics: one QStash message delivered 5× (one after another and
all at once) runs once; 10 different callers triggering one job on one
target at the same moment: one runs, the others get 409.

To make "at once" certain rather than lucky, a session holds an ACCESS
EXCLUSIVE lock on a table of the target while the requests arrive: the run
that got the job lock waits on it (holding the job lock) until every other
request has been answered; then the table is released and that run ends.
A run is counted by its report under ``runs/<job>/`` (a 409 or a replayed
delivery stores none).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import psycopg
import pytest

from safesync.shared import runs as run_records
from tests import sentinels
from tests.qstash_signer import qstash_headers

from .conftest import BEARER, World

CURRENT = sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"]
# (target, body, job name of its run reports, table to hold locked)
JOBS = [
    ("backup", {"action": "create", "db": "prod"}, "backup", "public.courses"),
    ("content_sync", {"mode": "sync", "adopt": True}, "content_sync", "public.courses"),
]
IDS = [j[0] for j in JOBS]


@contextmanager
def table_held(url: str, table: str) -> Iterator[None]:
    with psycopg.connect(url) as conn:
        conn.execute(f"lock table {table} in access exclusive mode")
        yield
        conn.rollback()


def runs(world: World, job: str) -> int:
    return len(run_records.listing(world.settings, job))  # records only: a sync's undo log lies beside its record


def post_all(world: World, target: str, bodies_and_headers: list[tuple[bytes, dict]], *, release_after: int, url: str, table: str):
    """POST every request at the same moment while ``table`` is held; release
    it once ``release_after`` answers are in. Returns the responses in order."""
    answers: list = [None] * len(bodies_and_headers)
    barrier = threading.Barrier(len(bodies_and_headers))
    # Apps are built here, one after another: building one compiles its URL
    # rules with `ast`, which CPython 3.11.7 cannot do in several threads at
    # once ("AST constructor recursion depth mismatch", gh-106905).
    clients = [world.client() for _ in bodies_and_headers]

    def send(i: int, body: bytes, headers: dict) -> None:
        client = clients[i]
        barrier.wait()
        response = client.post(f"/{target}", data=body, headers=headers)
        answers[i] = (response.status_code, response.get_json(silent=True) or {})

    with table_held(url, table):
        threads = [threading.Thread(target=send, args=(i, b, h)) for i, (b, h) in enumerate(bodies_and_headers)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 60
        while sum(a is not None for a in answers) < release_after and time.monotonic() < deadline:
            time.sleep(0.02)
    for th in threads:
        th.join(120)
    return answers


@pytest.mark.parametrize("target,body,job,table", JOBS, ids=IDS)
def test_same_message_five_times_in_a_row_runs_once(world, tally, target, body, job, table) -> None:
    t = tally("delivery: same message")
    client = world.client()
    raw = json.dumps(body).encode()
    headers = qstash_headers(CURRENT, f"{sentinels.PUBLIC_URL}/{target}", raw, message_id=f"msg_seq_{target}")
    answers = [client.post(f"/{target}", data=raw, headers=headers) for _ in range(5)]
    first = answers[0]
    t.check(first.status_code == 200 and not first.get_json().get("replayed"), f"/{target} first delivery → {first.status_code} {first.get_data()[:200]!r}")
    for i, again in enumerate(answers[1:], 2):
        t.check(again.status_code == 200 and again.get_json().get("replayed") is True, f"/{target} delivery {i} → {again.status_code} {again.get_data()[:200]!r}")
    t.check(runs(world, job) == 1, f"/{target}: {runs(world, job)} run reports after 5 deliveries of one message")


@pytest.mark.parametrize("target,body,job,table", JOBS, ids=IDS)
def test_same_message_five_times_at_once_runs_once(world, tally, target, body, job, table) -> None:
    t = tally("delivery: same message")
    raw = json.dumps(body).encode()
    headers = qstash_headers(CURRENT, f"{sentinels.PUBLIC_URL}/{target}", raw, message_id=f"msg_par_{target}")
    answers = post_all(world, target, [(raw, headers)] * 5, release_after=4, url=world.urls["prod"], table=table)
    statuses = sorted(a[0] for a in answers)
    t.check(statuses == [200, 409, 409, 409, 409], f"/{target} 5 concurrent deliveries → {statuses} {[a[1].get('error') for a in answers]}")
    later = world.client().post(f"/{target}", data=raw, headers=headers)
    t.check(later.status_code == 200 and later.get_json().get("replayed") is True, f"/{target} QStash's retry after the 409s → {later.status_code}")
    t.check(runs(world, job) == 1, f"/{target}: {runs(world, job)} run reports after 5 concurrent deliveries")


@pytest.mark.parametrize("target,body,job,table", JOBS, ids=IDS)
def test_ten_concurrent_triggers_one_runs_the_rest_409(world, tally, target, body, job, table) -> None:
    t = tally("delivery: concurrent triggers")
    raw = json.dumps(body).encode()
    requests = [(raw, {**BEARER, "Content-Type": "application/json"})] * 5
    requests += [(raw, qstash_headers(CURRENT, f"{sentinels.PUBLIC_URL}/{target}", raw, message_id=f"msg_{target}_{i}")) for i in range(5)]
    answers = post_all(world, target, requests, release_after=9, url=world.urls["prod"], table=table)
    statuses = sorted(a[0] for a in answers)
    ran = [a[1].get("error") or a[1].get("summary") or a[1].get("problems") or a[1].get("report", {}).get("problems") for a in answers if a[0] != 409]
    t.check(statuses == [200] + [409] * 9, f"/{target} 10 concurrent triggers → {statuses}; the one that ran said {ran}")
    t.check(all(a[1].get("error") for a in answers if a[0] == 409), f"/{target}: a 409 without a JSON error")
    t.check(runs(world, job) == 1, f"/{target}: {runs(world, job)} run reports after 10 concurrent triggers")


@pytest.mark.parametrize("target,body,job,table", JOBS, ids=IDS)
def test_one_signature_runs_once_whatever_the_headers(world, tally, target, body, job, table) -> None:
    """The same signed token re-sent with a new, missing, empty or another
    delivery's ``Upstash-Message-Id`` (and any ``Upstash-Retried``): the
    job runs once, every other answer is the first one replayed."""
    from tests.qstash_signer import sign

    t = tally("delivery: same message")
    client = world.client()
    raw = json.dumps(body).encode()
    token = sign(CURRENT, f"{sentinels.PUBLIC_URL}/{target}", raw)
    variants = [{"Upstash-Message-Id": "msg_a"}, {"Upstash-Message-Id": "msg_b"}, {}, {"Upstash-Message-Id": ""},
                {"Upstash-Message-Id": "msg_a", "Upstash-Retried": "3"}, {"Upstash-Message-Id": "msg_" + "x" * 200}]
    answers = [client.post(f"/{target}", data=raw, headers={"Upstash-Signature": token, "Content-Type": "application/json", **v}) for v in variants]
    t.check(answers[0].status_code == 200 and not answers[0].get_json().get("replayed"), f"/{target} first → {answers[0].status_code}")
    for variant, again in zip(variants[1:], answers[1:]):
        t.check(again.status_code == 200 and again.get_json().get("replayed") is True, f"/{target} same token with {variant} → {again.status_code} {again.get_data()[:160]!r}")
    t.check(runs(world, job) == 1, f"/{target}: {runs(world, job)} run reports from one signature")


def test_a_message_id_never_crosses_targets(world, tally) -> None:
    """Every job target, one message id: each runs its own job (or refuses
    on its own), none answers with another target's stored answer."""
    t = tally("delivery: same message")
    client = world.client()
    bodies = {"backup": {"action": "create", "db": "prod"}, "content_sync": {"mode": "dry-run"},
              "staging_clone": {"dry_run": True}, "calendar_sync": {"action": "watch"}}
    for target, body in bodies.items():
        raw = json.dumps(body).encode()
        response = client.post(f"/{target}", data=raw, headers=qstash_headers(CURRENT, f"{sentinels.PUBLIC_URL}/{target}", raw, message_id="msg_crossed"))
        payload = response.get_json() or {}
        report = payload.get("report", payload)
        t.check(not payload.get("replayed") and report.get("job") in (target, "calendar"), f"/{target} with a used message id → {response.status_code} {response.get_data()[:160]!r}")
