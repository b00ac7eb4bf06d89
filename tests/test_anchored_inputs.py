"""Exact matches only: a QStash ``sub`` equals the URL (no trailing-slash
tolerance, as the official Receiver compares it), and every id or name a
caller gives is matched whole — ``$`` also matches before a final ``\\n``,
so a pattern that ends in ``$`` with ``re.match`` accepts ``"prod\\n"``.
Checked on a real ``safesync serve``."""

from __future__ import annotations

import json

import pytest

from safesync.functions.backup.layout import BackupName, parse_key
from safesync.shared.config import parse_config
from safesync.shared.errors import BadRequest, ConfigError
from tests import sentinels
from tests.live_server import LiveServer
from tests.qstash_signer import qstash_headers

CURRENT = sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"]
BEARER = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}", "Content-Type": "application/json"}


@pytest.fixture
def server(make_db, write_settings):
    write_settings({"prod": make_db(), "staging": make_db()}, '[backup]\ndatabases = ["prod"]\n')
    with LiveServer() as live:
        yield live


def test_a_sub_with_a_trailing_slash_is_refused_at_status(server: LiveServer) -> None:
    good = server.request("GET", "/status", headers=qstash_headers(CURRENT, f"{sentinels.PUBLIC_URL}/status", b""))
    assert good.status == 200, good.text[:300]
    for sub in (f"{sentinels.PUBLIC_URL}/status/", f"{sentinels.PUBLIC_URL}/status?", f"{sentinels.PUBLIC_URL}/Status"):
        reply = server.request("GET", "/status", headers=qstash_headers(CURRENT, sub, b""))
        assert reply.status == 401 and "another URL" in reply.json()["error"], (sub, reply.text[:300])


@pytest.mark.parametrize("body, field", [
    ({"action": "verify", "id": "prod-20260101T020000Z-daily\n"}, "not a backup id"),
    ({"action": "restore", "id": "prod-20260101T020000Z-daily\n", "to": "staging"}, "not a backup id"),
    ({"action": "create", "db": "prod\n"}, "db"),
    ({"action": "list", "db": "prod\n"}, "db"),
    ({"action": "prune", "db": "prod\n", "dry_run": True}, "db"),
    ({"action": "restore", "id": "latest", "db": "prod", "to": "staging\n"}, "to"),
])
def test_a_trailing_newline_is_400_not_404(server: LiveServer, body: dict, field: str) -> None:
    headers = {**BEARER, "Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_ADMIN_TOKEN']}"}
    reply = server.post("backup", json.dumps(body).encode(), headers)
    assert reply.status == 400, reply.text[:300]
    assert field in reply.text


def test_content_sync_plan_digest_is_matched_whole(server: LiveServer) -> None:
    for digest in ("0" * 64 + "\n", "x" + "0" * 64, "0" * 64 + "x", "0" * 65):
        reply = server.post("content_sync", json.dumps({"mode": "sync", "expect_plan": digest}).encode(), BEARER)
        assert reply.status == 400 and "expect_plan" in reply.text, (digest, reply.text[:300])


def test_parsers_match_whole_strings() -> None:
    with pytest.raises(BadRequest):
        BackupName.parse("prod-20260101T020000Z-daily\n")
    assert BackupName.parse("prod-20260101T020000Z-daily").db == "prod"
    assert parse_key("prod/2026/01/prod-20260101T020000Z-daily.json\n") is None
    assert parse_key("prod/2026/01/prod-20260101T020000Z-daily.json") is not None
    for toml in ('[databases]\n"prod\\n" = "PROD_DATABASE_URL"', '[databases]\nprod = "PROD_DATABASE_URL\\n"',
                 '[content_sync]\ntables = ["courses\\n"]'):
        with pytest.raises(ConfigError):
            parse_config(toml)
