"""The ``backup`` HTTP target and CLI surface: actions, QStash schedule
(daily + prune, de-duplicated), the Vercel deploy webhook, bad input."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest

from safesync.functions import cli
from safesync.functions.backup import create_backup, get_backup, list_backups
from safesync.functions.serve import create_app
from tests import sentinels
from tests.fixtures.lms import create_lms
from tests.qstash_signer import qstash_headers

BEARER = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}"}
VERCEL_SECRET = sentinels.SECRETS["VERCEL_WEBHOOK_SECRET"]


TOML = """
[backup]
databases = ["prod"]
compress_level = 1
keep_daily = 1
keep_weekly = 0
keep_monthly = 0
keep_predeploy = 2
keep_event = 0
"""


@pytest.fixture
def env(make_db, write_settings):
    prod = make_db()
    create_lms(prod, variant="prod")
    return write_settings({"prod": prod, "scratch": make_db()}, TOML)


@pytest.fixture
def empty_env(make_db, write_settings):
    """For input checks that must fail before any database work."""
    return write_settings({"prod": make_db(), "scratch": make_db()}, TOML)


@pytest.fixture
def client():
    return create_app().test_client()


def _vercel(client, event: dict, secret: str = VERCEL_SECRET):
    body = json.dumps(event).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return client.post("/backup", data=body, headers={"x-vercel-signature": signature, "Content-Type": "application/json"})


def _deployment_event(event_id: str, target: str | None = "production", kind: str = "deployment.created") -> dict:
    return {
        "id": event_id,
        "type": kind,
        "createdAt": 1767225600000,
        "region": "iad1",
        "payload": {
            "deployment": {"id": "dpl_42", "url": "app-abc123.vercel.app", "name": "app", "meta": {}},
            "target": target,
            "project": {"id": "prj_1"},
            "links": {"deployment": "https://vercel.com/acme/app/dpl_42", "project": "https://vercel.com/acme/app"},
        },
    }


def test_ci_predeploy_backup_is_tagged_with_the_deployment(env, client) -> None:
    body = {"action": "create", "db": "prod", "kind": "predeploy", "deployment": "dpl_ci_7"}
    response = client.post("/backup", json=body, headers=BEARER)
    assert response.status_code == 200, response.get_json()
    data = response.get_json()
    backup_id = data["details"]["backup"]["id"]
    assert backup_id.endswith("-predeploy") and data["ok"]
    info = get_backup(env, backup_id)
    assert info.trigger["deployment"] == "dpl_ci_7" and info.trigger["via"] == "bearer"
    assert env.storage.list("runs/backup/"), "the run report is stored"


def test_qstash_schedule_makes_a_daily_backup_then_prunes_and_never_runs_twice(env, client) -> None:
    manual = create_backup(env, "prod", "manual")
    payload = b'{"action":"create","db":"prod"}'
    headers = qstash_headers(sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"], sentinels.PUBLIC_URL + "/backup", payload,
                             message_id="msg_daily_1")
    headers["Upstash-Schedule-Id"] = "scd_daily"
    first = client.post("/backup", data=payload, headers=headers)
    assert first.status_code == 200, first.get_json()
    daily = first.get_json()["details"]["backup"]
    assert daily["kind"] == "daily" and daily["trigger"]["schedule_id"] == "scd_daily"
    # keep_daily = 1: the day's newest (the daily) stays, the earlier manual one goes.
    assert first.get_json()["details"]["prune"]["deleted"] == [manual.id]
    again = client.post("/backup", data=payload, headers=headers)
    assert again.status_code == 200 and again.get_json()["replayed"] is True
    assert [b.id for b in list_backups(env)] == [daily["id"]]


def test_vercel_production_deployment_created_makes_a_predeploy_backup(env, client) -> None:
    response = _vercel(client, _deployment_event("evt_1"))
    assert response.status_code == 200, response.get_json()
    backup = response.get_json()["details"]["backup"]
    assert backup["kind"] == "predeploy"
    assert backup["trigger"] == {
        "via": "vercel", "event_id": "evt_1", "deployment": "dpl_42", "deployment_url": "app-abc123.vercel.app",
        "project": "prj_1", "inspect_url": "https://vercel.com/acme/app/dpl_42",
    }
    # Vercel redelivers the same event: no second backup.
    assert _vercel(client, _deployment_event("evt_1")).get_json()["replayed"] is True
    assert len(list_backups(env)) == 1


@pytest.mark.parametrize(
    "event, reason",
    [
        (_deployment_event("evt_2", target=None), "only production"),
        (_deployment_event("evt_3", target="staging"), "only production"),
        (_deployment_event("evt_4", kind="deployment.succeeded"), "only deployment.created"),
        ({"id": "evt_5", "type": "project.created", "payload": {}}, "only deployment.created"),
    ],
)
def test_other_vercel_events_are_skipped_with_200(env, client, event, reason) -> None:
    response = _vercel(client, event)
    assert response.status_code == 200
    assert reason in response.get_json()["skipped"]
    assert list_backups(env) == []


def test_vercel_webhook_with_a_bad_signature_or_bad_payload(env, client) -> None:
    assert _vercel(client, _deployment_event("evt_6"), secret="wrong").status_code == 401
    bad = _deployment_event("evt_7")
    bad["payload"]["deployment"] = "dpl_as_text"
    response = _vercel(client, bad)
    assert response.status_code == 400 and "payload.deployment" in response.get_json()["error"]
    assert list_backups(env) == []


def test_list_verify_prune_actions(env, client) -> None:
    nothing = client.post("/backup", json={"action": "verify"}, headers=BEARER)
    assert nothing.status_code == 200 and nothing.get_json()["ok"] is False
    assert nothing.get_json()["summary"] == "prod: no complete backup"  # not "0 of 0 FAILED"
    empty = client.post("/backup", json={"action": "verify", "id": ""}, headers=BEARER)
    assert empty.status_code == 400 and "is not a backup id" in empty.get_json()["error"]  # not "the newest of each"
    first = create_backup(env, "prod", "predeploy")
    second = create_backup(env, "prod", "predeploy")
    third = create_backup(env, "prod", "predeploy")
    listed = client.post("/backup", json={"action": "list"}, headers=BEARER).get_json()
    assert [row["id"] for row in listed["tables"]["backups"]] == [third.id, second.id, first.id]
    verified = client.post("/backup", json={"action": "verify", "id": second.id}, headers=BEARER).get_json()
    assert verified["ok"] and verified["details"]["results"][0]["checks"]["sha256_ok"]
    latest = client.post("/backup", json={"action": "verify"}, headers=BEARER).get_json()
    assert [r["id"] for r in latest["details"]["results"]] == [third.id]

    dry = client.post("/backup", json={"action": "prune", "dry_run": True}, headers=BEARER).get_json()
    assert dry["details"]["deleted"] == [first.id] and len(list_backups(env)) == 3  # keep_predeploy = 2
    done = client.post("/backup", json={"action": "prune", "db": "prod"}, headers=BEARER).get_json()
    assert done["details"]["deleted"] == [first.id]
    assert [b.id for b in list_backups(env)] == [third.id, second.id]
    missing = client.post("/backup", json={"action": "verify", "id": first.id}, headers=BEARER)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({}, 400, "action"),
        ({"action": "explode"}, 400, "action"),
        ({"action": "create"}, 400, "db"),
        ({"action": "create", "db": "prod", "kind": "safety"}, 400, "kind"),
        ({"action": "create", "db": "prod", "extra": 1}, 400, "extra"),
        ({"action": "create", "db": "prod; drop table users"}, 400, "db"),
        ({"action": "create", "db": "nope"}, 400, "unknown database"),
        ({"action": "create", "db": "prod", "deployment": "dpl_1"}, 400, "predeploy"),
        ({"action": "verify", "id": "../../etc/passwd"}, 400, "not a backup id"),
        ({"action": "verify", "id": "prod-20260101T000000Z-manual", "all": True}, 400, "either"),
        ({"action": "restore", "id": "latest", "to": "scratch"}, 403, "admin"),
        ({"action": "prune", "dry_run": "yes"}, 400, "dry_run"),
    ],
)
def test_bad_bodies_are_4xx_and_write_nothing(empty_env, client, body, status, needle) -> None:
    response = client.post("/backup", json=body, headers=BEARER)
    assert response.status_code == status, response.get_json()
    assert needle in json.dumps(response.get_json())
    assert empty_env.storage.list("") == []  # not even a run report


def test_cli_surface(env, capsys) -> None:
    assert cli.main(["backup", "create", "--db", "prod"]) == 0
    out = capsys.readouterr().out
    assert "✓ backup create: backup prod-" in out
    assert cli.main(["backup", "list"]) == 0
    assert "-manual" in capsys.readouterr().out
    admin_restore = ["backup", "restore", "latest", "--to", "scratch"]
    assert cli.main(admin_restore) == 2  # 'latest' needs --db
    assert "--db NAME" in capsys.readouterr().err
    assert cli.main(["backup", "verify", "prod-20260101T000000Z-manual", "--all"]) == 2
    assert cli.main(["backup", "verify", "prod-20260101T000000Z-manual"]) == 1  # not found
    with pytest.raises(SystemExit) as usage:  # argparse choices: exit 2 with one line
        cli.main(["backup", "create", "--db", "prod", "--kind", "safety"])
    assert usage.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert cli.main([*admin_restore, "--db", "prod", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["details"]["restore"]["target"] == "scratch" and os.environ["SCRATCH_DATABASE_URL"]


def test_an_unknown_action_is_echoed_back_short(client) -> None:
    """A 1 MB body of one unknown word came back whole in the 400's detail."""
    r = client.post("/backup", json={"action": "x" * 500_000}, headers=BEARER)
    body = r.get_json()
    assert r.status_code == 400 and "must be one of" in body["error"]
    assert body["detail"]["got"] == "x" * 64 + "…" and len(r.get_data()) < 1000
    assert client.post("/backup", json={"action": "restor"}, headers=BEARER).get_json()["detail"]["got"] == "restor"
