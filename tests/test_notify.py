"""Failure notifications: every failed or refused run POSTs a Slack-compatible
JSON message to SAFESYNC_NOTIFY_URL; delivery problems are logged, never
fatal; secrets never appear in the message or the log."""

from __future__ import annotations

import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safesync.shared import notify
from safesync.shared.errors import JobFailed, Refused
from safesync.shared.log import JsonFormatter
from safesync.shared.report import Report
from safesync.shared.runner import execute
from tests import sentinels

HOOK_SECRET_PATH = "/services/T0/B0/sekrit-hook-path-55aa"


class Receiver:
    """A webhook receiver in a thread: records every POST, answers ``status``."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.raw: list[bytes] = []
        self.headers: list[dict] = []
        self.status = 200
        self.statuses: list[int] = []  # answered first, one per POST, before ``status``
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.raw.append(body)
                receiver.headers.append(dict(self.headers))
                receiver.messages.append(json.loads(body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{HOOK_SECRET_PATH}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    r = Receiver()
    monkeypatch.setenv("SAFESYNC_NOTIFY_URL", r.url)
    yield r
    r.stop()


@pytest.fixture
def settings(write_settings):
    return write_settings({"prod": "postgresql://unused@127.0.0.1:1/unused"})


@pytest.fixture
def notify_log():
    """What the notify logger writes (JSON lines, as in production)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("safesync.notify")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def leaky_message() -> str:
    """An error text carrying every kind of secret a job could stumble on."""
    url = f"postgresql://app:{sentinels.DB_PASSWORD}@db.internal:5432/prod"
    return f"pg_dump failed on {url} (token {sentinels.SECRETS['QSTASH_TOKEN']}, key {sentinels.SECRETS['SAFESYNC_API_TOKEN']})"


def assert_no_secrets(text: str) -> None:
    for name, value in sentinels.SECRETS.items():
        assert value not in text, f"{name} leaked"
    assert sentinels.DB_PASSWORD not in text


def test_a_failed_run_sends_a_slack_compatible_message(receiver, settings):
    def job(report: Report) -> None:
        raise JobFailed(leaky_message(), {"url": f"postgresql://app:{sentinels.DB_PASSWORD}@db/prod"})

    answer = execute(settings, Report("backup", "create"), job)
    assert answer.status == 503
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert message["text"].startswith("safesync: backup create failed: pg_dump failed on postgresql://app:***@db.internal")
    assert message["event"] == "run.failed"
    assert (message["job"], message["action"], message["status"]) == ("backup", "create", "failed")
    assert message["run_id"] == answer.body["report"]["run_id"]
    assert_no_secrets(receiver.raw[0].decode())


def test_a_refused_run_notifies_too(receiver, settings):
    def job(report: Report) -> None:
        raise Refused("content sync would write protected table payments; rolled back")

    answer = execute(settings, Report("content_sync", "sync"), job)
    assert answer.status == 422
    [message] = receiver.messages
    assert message["event"] == "run.refused" and message["status"] == "refused"
    assert "content_sync sync refused: content sync would write protected table payments" in message["text"]

    # refused through the report (no exception) is the same
    execute(settings, Report("content_sync", "sync"), lambda r: r.refuse("unsafe: nothing changed"))
    assert receiver.messages[-1]["text"] == "safesync: content_sync sync refused: unsafe: nothing changed"


def test_healthy_runs_and_found_problems_do_not_notify(receiver, settings):
    execute(settings, Report("validate", "run"), lambda r: None)
    execute(settings, Report("validate", "run"), lambda r: r.problems("2 rules failed"))
    assert receiver.messages == []


@pytest.mark.parametrize("failure", ["500", "down"])
def test_delivery_failures_are_logged_and_never_fatal(receiver, settings, notify_log, failure):
    if failure == "500":
        receiver.status = 500
    else:
        receiver.stop()  # nothing listens on that port any more

    def job(report: Report) -> None:
        raise JobFailed(leaky_message())

    answer = execute(settings, Report("backup", "create"), job)
    assert answer.status == 503 and answer.body["error"].startswith("pg_dump failed")  # the run's own answer, intact
    logged = notify_log.getvalue()
    entry = json.loads(logged.splitlines()[-1])
    assert entry["message"] == "notification not delivered" and entry["severity"] == "WARNING"
    assert entry["event"] == "run.failed"
    assert ("500" in entry["error"]) if failure == "500" else ("refused" in entry["error"].lower())
    assert HOOK_SECRET_PATH not in logged  # the webhook URL is a credential (Slack)
    assert_no_secrets(logged)
    # A direct send says it was not delivered rather than raising.
    assert notify.send("test", "hello") is False


def test_no_url_means_no_attempt(settings, monkeypatch):
    monkeypatch.delenv("SAFESYNC_NOTIFY_URL", raising=False)
    assert notify.send("test", "hello") is False
    answer = execute(settings, Report("backup", "create"), lambda r: r.fail("broken"))
    assert answer.status == 503


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_a_delivery(settings, monkeypatch, notify_log, code):
    """urllib follows a 301/302/303 answer to a POST with a GET without the
    body, and the page it lands on answered 200: send() said "delivered"
    (the stale-backup marker was written, so it was never sent again) while
    the message went nowhere. A webhook answers 2xx or failed; a redirect is
    logged with its status and not followed (its Location, like the hook's
    own URL, is not logged)."""
    calls: list[str] = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append("POST")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(code)
            self.send_header("Location", "/moved-sekrit-elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            calls.append("GET")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setenv("SAFESYNC_NOTIFY_URL", f"http://127.0.0.1:{server.server_address[1]}{HOOK_SECRET_PATH}")
        assert notify.send("test", "hello") is False
    finally:
        server.shutdown()
        server.server_close()
    assert calls == ["POST"]
    entry = json.loads(notify_log.getvalue().splitlines()[-1])
    assert entry["message"] == "notification not delivered" and str(code) in entry["error"]
    assert "sekrit" not in notify_log.getvalue()


def test_the_text_escapes_slack_control_characters(receiver, settings):
    """Slack parses ``&``, ``<`` and ``>`` in a message's text as control
    sequences — ``<!channel>`` pings everyone, ``<https://x|label>`` is a link
    showing another address — and its formatting reference says to send
    them as ``&amp;``, ``&lt;``, ``&gt;`` (api.slack.com/reference/surfaces/
    formatting, "Escaping text"). A name from a database (a table called
    ``<!channel>``) reached the text as it was; the structured fields keep
    the summary unescaped for other receivers."""
    summary = "table <!channel> & <https://evil.example|docs> would be written; rolled back"
    execute(settings, Report("content_sync", "sync"), lambda r: r.refuse(summary))
    [message] = receiver.messages
    assert message["text"] == (
        "safesync: content_sync sync refused: table &lt;!channel&gt; &amp; &lt;https://evil.example|docs&gt; would be written; rolled back"
    )
    assert message["summary"] == summary


@pytest.mark.parametrize("first, attempts", [(503, 2), (429, 2), (400, 1)])
def test_a_transient_webhook_failure_is_tried_once_more(receiver, settings, first, attempts):
    """One attempt: a single 503 or 429 from Slack (its docs: rate limits
    answer 429 with Retry-After) lost the failure notice of that run for
    good. A transient answer is tried once more after a short pause; a
    permanent one (400 invalid_payload, 404 no_service) is not."""
    receiver.statuses = [first]
    execute(settings, Report("backup", "create"), lambda r: r.fail("broken"))
    assert len(receiver.messages) == attempts
    assert all(m["event"] == "run.failed" for m in receiver.messages)
    assert notify.send("test", "again") is True  # the receiver answers 200 again
