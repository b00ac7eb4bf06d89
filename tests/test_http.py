"""The HTTP layer of every target: method, size, auth, JSON, error mapping,
QStash 489, locks (409) and de-duplication of QStash deliveries."""

from __future__ import annotations

import json
import os
import threading
import time

import flask
import psycopg
import pytest

from safesync.functions.main import TARGETS
from safesync.functions.serve import create_app
from safesync.shared.errors import Refused
from safesync.shared.http import Call, serve
from safesync.shared.report import Report
from safesync.shared.runner import execute
from tests import sentinels
from tests.qstash_signer import qstash_headers

BEARER = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}"}
CURRENT = sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"]


@pytest.fixture
def client():
    return create_app().test_client()


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_rejects_missing_and_bad_credentials(client, target: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, qstash_headers("wrong-key", sentinels.PUBLIC_URL + f"/{target}", b"{}")):
        response = client.post(f"/{target}", data=b"{}", headers=headers)
        assert response.status_code == 401
        assert response.is_json and "error" in response.get_json()


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "calendar_notify"])  # its body is ignored
def test_every_target_rejects_bad_bodies_with_4xx_json(client, target: str) -> None:
    cases = [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'"text"', 400),
        (b"\xff\xfe", 400),
        (b"x" * 1_000_001, 413),
    ]
    for body, status in cases:
        response = client.post(f"/{target}", data=body, headers={**BEARER, "Content-Type": "application/json"})
        assert response.status_code == status, (target, body[:20], response.get_data()[:200])
        payload = response.get_json()
        assert isinstance(payload["error"], str) and "Traceback" not in payload["error"]


@pytest.mark.parametrize("header, value", [
    ("x-vercel-signature", "caf\u00e9"),
    ("x-vercel-signature", "\u00ff" * 40),
    ("Authorization", "Bearer caf\u00e9"),
    ("Upstash-Signature", "caf\u00e9.\u00e9.\u00e9"),
], ids=["vercel", "vercel-hex-length", "bearer", "qstash"])
def test_a_credential_with_non_ascii_bytes_is_401_not_500(client, header: str, value: str) -> None:
    """A header's bytes reach us as Latin-1 text; hmac.compare_digest raises
    TypeError on non-ASCII str, which was a 500 for a forged Vercel signature."""
    response = client.post("/backup", data=b'{"action":"list"}', headers={header: value, "Content-Type": "application/json"})
    assert response.status_code == 401, response.get_data()[:200]
    assert response.is_json and isinstance(response.get_json()["error"], str)


def test_oversized_body_is_rejected_before_auth(client) -> None:
    response = client.post("/backup", data=b"x" * 2_000_000)
    assert response.status_code == 413


def test_wrong_method_is_405(client) -> None:
    response = client.put("/backup", headers=BEARER)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nope", 404), ("POST", "/backup/", 404), ("GET", "/", 404),
    ("TRACE", "/backup", 405), ("PROPFIND", "/status", 405),
])
def test_what_reaches_no_target_is_json_too(client, method: str, path: str, status: int) -> None:
    """``safesync serve`` answered an unknown path or a method no route
    lists (TRACE) with Flask's HTML page; every answer is JSON."""
    response = client.open(path, method=method, headers=BEARER)
    assert response.status_code == status and response.is_json, response.get_data()[:200]
    assert isinstance(response.get_json()["error"], str)


def _app(handler) -> flask.Flask:
    app = flask.Flask(__name__)
    app.add_url_rule("/job", view_func=lambda: serve(flask.request, "job", handler), methods=["POST"])
    return app


def test_permanent_failure_to_qstash_is_489_non_retryable() -> None:
    def handler(call: Call):
        raise Refused("restoring into prod needs confirmation")

    client = _app(handler).test_client()
    url = sentinels.PUBLIC_URL + "/job"
    response = client.post("/job", data=b"{}", headers=qstash_headers(CURRENT, url, b"{}"))
    assert response.status_code == 489
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    assert response.get_json()["error"] == "restoring into prod needs confirmation"
    # The same refusal to a curl caller is a plain 422.
    response = client.post("/job", data=b"{}", headers=BEARER)
    assert response.status_code == 422
    assert "Upstash-NonRetryable-Error" not in response.headers


def test_unexpected_exception_is_500_without_traceback() -> None:
    def handler(call: Call):
        raise ZeroDivisionError("boom")

    response = _app(handler).test_client().post("/job", data=b"{}", headers=BEARER)
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error"}


# --- locks and de-duplication, through the real runner and a real database ---


@pytest.fixture
def counting_job(make_db, write_settings):
    """A job that counts its runs in a table of the target database and
    takes a moment, so concurrent requests overlap."""
    url = make_db()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table runs (n serial primary key, at timestamptz default now())")
    write_settings({"prod": url})

    def handler(call: Call):
        def fn(report: Report) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("insert into runs default values")
            time.sleep(0.4)
            report.summary = "counted"

        return execute(call.settings, Report("counter", "run", trigger=call.trigger()), fn, target="prod", delivery=call.delivery)

    def runs() -> int:
        with psycopg.connect(url) as conn:
            return conn.execute("select count(*) from runs").fetchone()[0]

    return _app(handler), runs


def test_same_qstash_message_five_times_runs_once(counting_job) -> None:
    app, runs = counting_job
    headers = qstash_headers(CURRENT, sentinels.PUBLIC_URL + "/job", b"{}", message_id="msg_dup")
    statuses = []

    def deliver() -> None:
        statuses.append(app.test_client().post("/job", data=b"{}", headers=headers).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Concurrent duplicates are told to retry (409); one ran.
    assert sorted(statuses).count(200) >= 1 and set(statuses) <= {200, 409}
    for _ in range(5):  # sequential redeliveries get the stored result
        response = app.test_client().post("/job", data=b"{}", headers=headers)
        assert response.status_code == 200
        assert response.get_json()["replayed"] is True
        assert response.get_json()["summary"] == "counted"
    assert runs() == 1


def test_two_concurrent_runs_one_gets_409(counting_job) -> None:
    app, runs = counting_job
    results: list[int] = []

    def call() -> None:
        results.append(app.test_client().post("/job", data=b"{}", headers=BEARER).status_code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409]
    assert runs() == 1


def test_run_report_is_stored_and_redacted(counting_job, tmp_path) -> None:
    app, _ = counting_job
    assert app.test_client().post("/job", data=b"{}", headers=BEARER).status_code == 200
    stored = list((tmp_path / "backups" / "runs" / "counter").glob("*.json"))
    assert len(stored) == 1
    text = stored[0].read_text()
    assert json.loads(text)["status"] == "ok"
    for secret in [*sentinels.SECRETS.values(), sentinels.DB_PASSWORD]:
        assert secret not in text
    assert os.environ["PROD_DATABASE_URL"] not in text


def test_config_error_is_400_with_one_line(client, tmp_path, monkeypatch) -> None:
    path = tmp_path / "safesync.toml"
    path.write_text("[backup]\nkeep_dayly = 3\n")
    monkeypatch.setenv("SAFESYNC_CONFIG", str(path))
    response = client.get("/status", headers=BEARER)
    assert response.status_code == 400
    assert response.get_json() == {"error": f"{path}: backup.keep_dayly: unknown key"}


@pytest.mark.parametrize("value", ["1MB", "-5", "0", "1e6", "١٢٣", "99999999999999999999"])
def test_a_malformed_body_limit_is_a_config_error_not_500(client, monkeypatch, value: str) -> None:
    """``int("1MB")`` raised ValueError: every request was a 500 "internal
    error" saying nothing of the setting; a limit of 0 or less refused
    every body, and Arabic-Indic digits were read as a number. (Unset or
    empty: the default.)"""
    monkeypatch.setenv("SAFESYNC_MAX_BODY_BYTES", value)
    response = client.post("/backup", data=b'{"action":"list"}', headers={**BEARER, "Content-Type": "application/json"})
    assert response.status_code == 400, response.get_data()[:200]
    assert response.get_json() == {"error": f"SAFESYNC_MAX_BODY_BYTES must be a whole number of bytes above 0, not {value!r}"}


def test_a_body_limit_from_the_environment_is_applied(client, monkeypatch) -> None:
    monkeypatch.setenv("SAFESYNC_MAX_BODY_BYTES", " 16 ")
    response = client.post("/backup", data=b'{"action":"list", "db": "prod"}', headers={**BEARER, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.get_json() == {"error": "request body over 16 bytes"}


QSTASH_TO_BACKUP = sentinels.PUBLIC_URL + "/backup"
TOO_LARGE = b'{"action":"list","pad":"' + b"x" * 1_000_000 + b'"}'


@pytest.mark.parametrize("method, body, env, status, error", [
    ("POST", TOO_LARGE, {}, 413, "request body over 1000000 bytes"),
    ("GET", b"", {}, 405, "method GET not allowed; use POST"),
    ("POST", b"{}", {"SAFESYNC_MAX_BODY_BYTES": "1MB"}, 400, "SAFESYNC_MAX_BODY_BYTES must be a whole number of bytes above 0, not '1MB'"),
], ids=["too-large", "wrong-method", "bad-limit"])
def test_a_refusal_before_authentication_stops_qstash_retries(client, monkeypatch, method, body, env, status, error) -> None:
    """QStash retries every answer but 2xx, and 489 + Upstash-NonRetryable-Error
    (Upstash docs, features/retry: "Non-Retryable Error"). A 413, 405 or a
    bad body limit is answered before the caller is known, so it went back
    to QStash as a plain 4xx, re-sent for hours though it can never succeed.
    Now a request whose QStash signature verifies — all but the body hash,
    which an unread body cannot prove — gets 489; any other caller, and a
    token signed with another key, gets the plain status."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    send = lambda headers: client.open("/backup", method=method, data=body, headers=headers)  # noqa: E731
    response = send(qstash_headers(CURRENT, QSTASH_TO_BACKUP, body))
    assert response.status_code == 489, response.get_data()[:200]
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    assert response.get_json() == {"error": error}
    for headers in (qstash_headers("another-key", QSTASH_TO_BACKUP, body), qstash_headers(CURRENT, sentinels.PUBLIC_URL + "/validate", body), BEARER, {}):
        response = send(headers)
        assert response.status_code == status and "Upstash-NonRetryable-Error" not in response.headers
        assert response.get_json() == {"error": error}


def test_a_qstash_token_for_another_body_is_not_made_non_retryable(client) -> None:
    """The body-less check is only for a body never read: a read body whose
    hash the token does not sign stays a 401 (retryable, and nothing ran)."""
    response = client.post("/backup", data=b"{not json", headers=qstash_headers(CURRENT, QSTASH_TO_BACKUP, b"{}"))
    assert response.status_code == 401 and "Upstash-NonRetryable-Error" not in response.headers


def test_the_access_log_of_safesync_serve_never_holds_a_query() -> None:
    """Werkzeug's access line was the whole request target: a status page
    ``?link=`` code (a session for whoever reads the log first) or a token a
    caller put in a query was written to the log. It keeps method, path and
    status, and drops the query — also from the line of a malformed request."""
    import socket

    from tests.live_server import LiveServer

    code = "v1.api.9999999999.0123456789abcdef0123456789abcdef.feedfacefeedface"
    with LiveServer() as server:
        assert server.request("GET", f"/status?link={code}", headers={"Accept": "text/html"}).status == 401
        assert server.request("POST", "/backup?token=query-secret-1", b"{}").status == 401
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(b"GET /status?link=query-secret-2 HTTP/1.1 extra\r\n\r\n")
            assert raw.recv(100)  # an error page (HTTP/0.9 style: the version was not understood)
        server.request("OPTIONS", "/status")  # the log has every line of the requests before it
    log = server.log_text()
    assert "GET /status" in log and "POST /backup" in log
    for secret in (code, "query-secret-1", "query-secret-2", "9999999999"):
        assert secret not in log, log[-2000:]
