"""JSON logs: severity, run_id, and secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import logging

from safesync.shared import log
from tests import sentinels


def test_json_lines_with_severity_run_id_and_redaction(monkeypatch) -> None:
    url = f"postgresql://app:{sentinels.DB_PASSWORD}@db.example:5432/prod"
    monkeypatch.setenv("PROD_DATABASE_URL", url)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log.JsonFormatter())
    logger = logging.getLogger("safesync.test_log")
    logger.addHandler(handler)
    logger.setLevel("INFO")
    token = log.run_id_var.set("run123")
    try:
        log.get_logger("test_log").warning(
            f"could not reach {url}",
            dsn=f"host=db password={sentinels.DB_PASSWORD} dbname=x",
            token=sentinels.SECRETS["SAFESYNC_API_TOKEN"],
            nested={"k": [sentinels.SECRETS["QSTASH_CURRENT_SIGNING_KEY"]]},
        )
    finally:
        log.run_id_var.reset(token)
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    entry = json.loads(line)
    assert entry["severity"] == "WARNING" and entry["run_id"] == "run123"
    assert "postgresql://app:***@db.example:5432/prod" in entry["message"]
    for secret in [sentinels.DB_PASSWORD, *sentinels.SECRETS.values()]:
        assert secret not in line


def test_redact_other_url_forms() -> None:
    assert log.redact("postgres://u:p%40ss@h/db") == "postgres://u:***@h/db"
    assert log.redact("password='a b' host=x") == "password=*** host=x"
    assert log.redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_public_addresses_are_shown_and_webhook_urls_are_secret(tmp_path, monkeypatch) -> None:
    """A service's own public URL in a report is not a leak (redacting it made
    calendar reports unreadable); a webhook URL (Slack's carries its token) is."""
    from safesync.shared.config import load_settings
    from safesync.shared.redaction import is_secret_env, redact

    (tmp_path / "safesync.toml").write_text("")
    monkeypatch.setenv("SAFESYNC_NOTIFY_PUBLIC_URL", "https://notify-abc123.example.run")
    settings = load_settings(tmp_path / "safesync.toml")
    assert settings.public("SAFESYNC_NOTIFY_PUBLIC_URL") == "https://notify-abc123.example.run"
    assert redact("channel at https://notify-abc123.example.run/calendar_notify") == "channel at https://notify-abc123.example.run/calendar_notify"
    for name in ("SAFESYNC_PUBLIC_URL", "SAFESYNC_NOTIFY_PUBLIC_URL", "SAFESYNC_BACKUP_BASE_URL", "SAFESYNC_CALENDAR_SYNC_BASE_URL"):
        assert not is_secret_env(name), name
    for name in ("SAFESYNC_NOTIFY_URL", "PROD_DATABASE_URL", "SAFESYNC_FAILURE_CALLBACK_URL", "QSTASH_TOKEN"):
        assert is_secret_env(name), name


def test_a_deployed_function_logs_json_lines_with_secrets_redacted(write_settings) -> None:
    """Under functions-framework (every deployed target) nothing installed
    the JSON handler — only the CLI did — so a warning reached stderr as a
    bare "request failed", without severity, run id or its fields, through
    Python's last-resort handler, and an unhandled error's traceback was
    written unredacted. The entry point now sets the logging up as the CLI
    does."""
    import os

    from tests.live_server import LiveServer

    port = 1  # nothing listens: the backup fails (503) and the HTTP layer logs a warning
    write_settings({"prod": f"postgresql://app:{sentinels.DB_PASSWORD}@127.0.0.1:{port}/prod"}, '[backup]\ndatabases = ["prod"]\n')
    bearer = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}", "Content-Type": "application/json"}
    with LiveServer(target="backup", env=os.environ.copy()) as server:
        reply = server.post("backup", b'{"action": "create", "db": "prod"}', bearer)
        assert reply.status == 503, reply.text[:300]
    lines = [line for line in server.log_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    failed = [e for e in entries if e.get("message") == "request failed"]
    assert failed and failed[0]["severity"] == "WARNING" and failed[0]["target"] == "backup" and failed[0]["error"], server.log_text()[-2000:]
    assert sentinels.DB_PASSWORD not in server.log_text()


def test_the_log_level_is_read_as_people_write_it() -> None:
    """``SAFESYNC_LOG_LEVEL=debug`` (as most tools take it) went straight to
    ``Logger.setLevel``, which knows only upper-case names: a ValueError
    traceback from every CLI command, ``--help`` included, and — now that the
    functions' entry point sets logging up — from every deployed target at
    import. Case does not matter; an unknown level logs at the default with
    one warning naming the value."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    safesync = str(Path(sys.executable).parent / "safesync")
    env = {k: v for k, v in os.environ.items() if k != "SAFESYNC_LOG_LEVEL"}
    deployed = "import functions_framework; functions_framework.create_app('status', 'functions/main.py')"
    for value in ("debug", " Info ", "warning"):
        for argv in ([safesync, "--help"], [sys.executable, "-c", deployed]):
            done = subprocess.run(argv, env={**env, "SAFESYNC_LOG_LEVEL": value}, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (value, done.stderr[-1500:])
    done = subprocess.run([safesync, "--help"], env={**env, "SAFESYNC_LOG_LEVEL": "verbose"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: safesync" in done.stdout, done.stderr[-1500:]
    [line] = done.stderr.splitlines()
    entry = json.loads(line)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "SAFESYNC_LOG_LEVEL 'verbose' is not DEBUG, INFO, WARNING, ERROR or CRITICAL: logging at WARNING"
