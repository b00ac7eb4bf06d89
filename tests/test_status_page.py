"""The status page a person opens: log in once (token in a POST body →
session cookie), or a one-time link; what the page shows; what a session
may not do. Real data throughout (tests/status_world.py); the page in a real
browser is tests/test_status_browser.py."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from safesync.functions import cli
from safesync.functions.serve import create_app
from safesync.shared import sessions
from safesync.shared.errors import AuthError
from tests import sentinels
from tests.status_world import status_world  # noqa: F401  (fixture)

TOKEN = sentinels.SECRETS["SAFESYNC_API_TOKEN"]
HTML = {"Accept": "text/html"}
SAME = {"Sec-Fetch-Site": "same-origin"}


def _login(client, token: str = TOKEN, **headers):
    return client.post("/status", data={"token": token}, headers={**SAME, **headers})


def _cookie(response) -> str:
    header = response.headers["Set-Cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


# -- signed sessions and links -------------------------------------------------------

def test_session_round_trip_and_every_way_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    value = sessions.issue(sessions.SESSION, "api")
    grant = sessions.verify(sessions.SESSION, value)
    assert grant.kind == "api" and grant.principal.scopes == frozenset({"status"})
    assert TOKEN not in value
    *head, mac = value.split(".")
    tampered = [
        ".".join([*head, ("0" if mac[0] != "0" else "1") + mac[1:]]),  # signature
        value.replace(".api.", ".admin."),  # another kind, same signature
        ".".join([head[0], head[1], str(int(head[2]) + 3600), head[3], mac]),  # longer life
    ]
    for bad in tampered + ["", "v1", "v2." + value[3:], value + ".x"]:
        with pytest.raises(AuthError):
            sessions.verify(sessions.SESSION, bad)
    with pytest.raises(AuthError, match="expired"):
        sessions.verify(sessions.SESSION, value, now=time.time() + sessions.TTL_S[sessions.SESSION] + 1)
    with pytest.raises(AuthError, match="not valid"):  # a link is never a session, nor the reverse
        sessions.verify(sessions.LINK, value)
    with pytest.raises(AuthError, match="not valid"):
        sessions.verify(sessions.SESSION, sessions.issue(sessions.LINK, "api"))
    monkeypatch.setenv("SAFESYNC_API_TOKEN", "a-rotated-api-token")  # rotating the token ends its sessions
    with pytest.raises(AuthError, match="another token"):
        sessions.verify(sessions.SESSION, value)


# -- logging in ----------------------------------------------------------------------

def test_login_form_then_session_cookie_then_page(status_world) -> None:
    client = create_app().test_client()
    first = client.get("/status", headers=HTML)
    assert first.status_code == 401 and first.mimetype == "text/html"
    form = first.get_data(as_text=True)
    assert re.search(r'<form method="post" action="/status">', form) and 'type="password" name="token"' in form
    assert "default-src 'none'" in first.headers["Content-Security-Policy"] and first.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in first.headers

    wrong = _login(client, "not-the-token")
    assert wrong.status_code == 401 and "That token is not valid" in wrong.get_data(as_text=True)
    assert "Set-Cookie" not in wrong.headers

    ok = _login(client)
    assert ok.status_code == 303 and ok.headers["Location"] == "/status"
    cookie = ok.headers["Set-Cookie"]
    assert cookie.startswith("__Host-safesync-status=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
        assert flag in cookie
    assert TOKEN not in cookie and "Domain" not in cookie

    page = client.get("/status", headers=HTML)
    assert page.status_code == 200 and "Needs attention" in page.get_data(as_text=True)
    assert 'name="action" value="logout"' in page.get_data(as_text=True)

    bye = client.post("/status", data={"action": "logout"}, headers=SAME)
    assert bye.status_code == 303 and "Max-Age=0" in bye.headers["Set-Cookie"]
    assert client.get("/status", headers=HTML).status_code == 401


def test_login_from_another_site_is_refused(status_world) -> None:
    client = create_app().test_client()
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "https://evil.example"}):
        answer = client.post("/status", data={"token": TOKEN}, headers=headers)
        assert answer.status_code == 403 and "Set-Cookie" not in answer.headers


def test_bad_login_bodies_are_4xx_and_set_nothing(status_world) -> None:
    client = create_app().test_client()
    cases = [
        (b"token=" + b"x" * 5000, 413),
        (b"\xff\xfe=\xff", 400),
        (b"", 400),
        (b"token=", 400),
        (b"a=1&b=2&c=3&d=4&e=5&token=" + TOKEN.encode(), 400),
    ]
    for body, status in cases:
        answer = client.post("/status", data=body, headers={**SAME, "Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == status, (body[:20], answer.status_code)
        assert "Set-Cookie" not in answer.headers and answer.mimetype == "text/html"


def test_a_session_reads_the_page_and_nothing_else(status_world) -> None:
    client = create_app().test_client()
    _login(client)
    assert client.get("/status", headers=HTML).status_code == 200
    assert client.get("/status").status_code == 401  # the JSON API wants its credential
    assert client.post("/status", json={}).status_code == 401
    for target in ("backup", "content_sync", "staging_clone", "migrate"):
        assert client.post(f"/{target}", json={"action": "list"}).status_code == 401


def test_a_rotated_token_ends_the_session(status_world, monkeypatch: pytest.MonkeyPatch) -> None:
    client = create_app().test_client()
    _login(client)
    monkeypatch.setenv("SAFESYNC_API_TOKEN", "the-next-api-token-value")
    again = client.get("/status", headers=HTML)
    assert again.status_code == 401 and "log in again" in again.get_data(as_text=True)


# -- one-time links --------------------------------------------------------------------

def _link(capsys, *args: str) -> str:
    assert cli.main(["status", "--link", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)["link"]


def test_link_opens_a_session_once_and_leaves_the_address_bar(status_world, capsys) -> None:
    link = _link(capsys, "--url", "http://localhost/status")
    assert link.startswith("http://localhost/status?link=v1.api.") and TOKEN not in link
    path = link.removeprefix("http://localhost")
    client = create_app().test_client()
    opened = client.get(path)
    assert opened.status_code == 303 and opened.headers["Location"] == "/status"
    assert opened.headers["Set-Cookie"].startswith("__Host-safesync-status=")
    assert client.get("/status", headers=HTML).status_code == 200
    again = create_app().test_client().get(path)
    assert again.status_code == 401 and "already used" in again.get_data(as_text=True)
    assert "Set-Cookie" not in again.headers


def test_expired_forged_or_misused_links_are_refused(status_world, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    client = create_app().test_client()
    code = _link(capsys, "--url", "http://localhost/status").split("link=", 1)[1]
    client.set_cookie(sessions_cookie := "__Host-safesync-status", code)  # a link is not a session
    assert client.get("/status", headers=HTML).status_code == 401
    client.delete_cookie(sessions_cookie)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 11 * 60)
    assert client.get(f"/status?link={code}").status_code == 401
    monkeypatch.setattr(time, "time", real_time)
    assert client.get("/status?link=" + code[:-1] + ("0" if code[-1] != "0" else "1")).status_code == 401
    assert client.get("/status?link=nonsense").status_code == 401


def test_a_session_or_link_with_non_ascii_characters_is_401_not_500(status_world) -> None:
    """hmac.compare_digest raises TypeError on non-ASCII str: a forged
    cookie or ?link= ending in "café" was an HTML 500."""
    for purpose in (sessions.SESSION, sessions.LINK):
        *head, _mac = sessions.issue(purpose, "api").split(".")
        with pytest.raises(AuthError, match="not valid"):
            sessions.verify(purpose, ".".join([*head, "caf\u00e9"]))
    client = create_app().test_client()
    *head, _mac = sessions.issue(sessions.LINK, "api").split(".")
    assert client.get("/status", query_string={"link": ".".join([*head, "caf\u00e9"])}).status_code == 401
    *head, _mac = sessions.issue(sessions.SESSION, "api").split(".")
    client.set_cookie("__Host-safesync-status", ".".join([*head, "caf\u00e9"]))
    assert client.get("/status", headers=HTML).status_code == 401


def test_link_url_comes_from_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh processes, as a person runs the command (a process that read a
    URL through Settings.secret treats it as a secret from then on)."""
    import os
    import subprocess
    import sys

    def link(env: dict[str, str | None], *args: str) -> tuple[int, str]:
        environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        done = subprocess.run([sys.executable, "-m", "safesync.functions.cli", "status", "--link", "--json", *args],
                              capture_output=True, text=True, env=environ, timeout=60)
        return done.returncode, json.loads(done.stdout).get("link", "") if done.returncode == 0 else done.stdout

    assert link({"SAFESYNC_STATUS_BASE_URL": "https://status.example.test/"})[1].startswith("https://status.example.test/status?link=")
    assert link({"SAFESYNC_STATUS_BASE_URL": None})[1].startswith(f"{sentinels.PUBLIC_URL}/status?link=")
    assert link({"SAFESYNC_STATUS_BASE_URL": None, "SAFESYNC_PUBLIC_URL": None})[0] == 2
    assert link({}, "--url", "ftp://x/status")[0] == 2
    assert link({"SAFESYNC_API_TOKEN": None, "SAFESYNC_ADMIN_TOKEN": None}, "--url", "https://x.test/status")[0] == 2


# -- what the page shows ------------------------------------------------------------------

def test_the_page_shows_timeline_runs_sync_calendar_and_attention_first(status_world) -> None:
    client = create_app().test_client()
    _login(client)
    text = client.get("/status", headers=HTML).get_data(as_text=True)
    body = client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()["details"]

    # today: a manual backup and the two content syncs' presync ones; 8 and 40 days ago one each
    line = body["timeline"][0]
    assert line["db"] == "prod" and line["complete"] == 5 and line["to_prune"] == 0
    now = datetime.now(timezone.utc)
    months = len({(now - timedelta(days=d)).strftime("%Y-%m") for d in (0, 8, 40)})
    assert line["kept"] == {"newest": 1, "daily": 3, "weekly": 3, "monthly": months, "predeploy": 1, "presync": 2}
    assert line["backups"][0]["id"] == status_world.latest.id
    assert line["backups"][0]["kept_by"] == ["newest", "daily", "weekly", "monthly"]
    assert line["last_verify"]["ok"] and line["last_drill"]["ok"] and line["last_drill"]["backup"] == status_world.latest.id
    assert "3 daily" in text and f"{months} monthly" in text and "1 predeploy" in text and "2 presync" in text
    chart = re.search(r"<svg[^>]*>.*?</svg>", text, re.S).group(0)
    assert len(re.search(r'points="([^"]+)"', chart).group(1).split()) == 5
    assert "Size of the last 5 backups of prod" in chart

    runs = {r["job"]: r for r in body["runs"]}
    assert runs["backup"]["status"] == "ok" and runs["content_sync"]["action"] == "sync"
    sync = body["content_sync"]
    assert sync["run_id"] == status_world.sync["run_id"]
    assert sync["conflicts"] == 1 and sync["written"] == 2
    assert "2 rows written" in text and "1 conflicts" in text

    channels = body["calendar"]["push_channels"]
    assert [c["calendar_id"] for c in channels] == ["primary"] and channels[0]["expires_at"]
    assert "primary: push channel expires" in text and "(in 3 h)" in text
    reasons = body["reasons"]
    assert any("push channel expires" in r for r in reasons)
    assert [r.split(":")[0] for r in reasons] == sorted((r.split(":")[0] for r in reasons), key=lambda w: w != "failing")
    attention = re.search(r'<section class="attention">(.*?)</section>', text, re.S).group(1)
    assert attention.index(reasons[0][:30]) < attention.index(reasons[-1][:30]) or len(reasons) == 1
    assert "<script" not in text and TOKEN not in text


@pytest.mark.parametrize("path", ["//evil.example/status", "/\\evil.example/status", "///evil.example"])
def test_a_path_that_names_another_site_never_becomes_the_redirect(status_world, path) -> None:
    """A deployed function answers every path: a link to
    ``https://status.example//evil.example/status`` showed the login form,
    and the login's 303 went to ``Location: //evil.example/status`` — another
    site, for a person who had just typed the token. The page's own path
    keeps one leading slash, in the redirect and in the forms."""
    import flask

    from safesync.functions.status import browser

    app = flask.Flask("status-test")
    with app.test_request_context(method="POST", data={"token": TOKEN}, headers=SAME, environ_overrides={"PATH_INFO": path}):
        response = browser.handle(flask.request)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    with app.test_request_context(method="GET", headers=HTML, environ_overrides={"PATH_INFO": path}):
        form = browser.handle(flask.request).get_data(as_text=True)
    action = re.search(r'<form method="post" action="([^"]*)"', form)[1]
    assert action.startswith("/") and not action.startswith(("//", "/\\")), action
