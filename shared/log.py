"""JSON-lines logging with ``severity`` (what Cloud Logging reads) and
``run_id``, and redaction of every secret we know about.

Redaction works two ways: values of known secret environment variables are
replaced wherever they appear, and anything shaped like a database URL has
its password removed. ``redact`` is also used on reports and error texts.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any

run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)

SECRET_ENV_SUFFIXES = ("_URL", "_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_CREDENTIALS")
_NOT_SECRET = {"SAFESYNC_PUBLIC_URL", "SAFESYNC_GOOGLE_API_ROOT", "STORAGE_EMULATOR_HOST"}
_URL_PASSWORD = re.compile(r"(?P<scheme>postgres(?:ql)?://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_KV_PASSWORD = re.compile(r"(?P<key>password\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)
_LEVEL_TO_SEVERITY = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}


def _secret_values() -> list[str]:
    """Values of environment variables that hold secrets (long enough to be
    worth hiding; a 1-character value would redact everything)."""
    values = []
    for name, value in os.environ.items():
        if name in _NOT_SECRET or len(value) < 6:
            continue
        if name.endswith(SECRET_ENV_SUFFIXES) or "DATABASE_URL" in name:
            values.append(value)
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """Remove passwords from URLs/DSNs and every known secret value."""
    for value in _secret_values():
        if value in text:
            text = text.replace(value, redact_url(value) if "://" in value else "[redacted]")
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['key']}***", text)


def redact_url(url: str) -> str:
    """A database URL without its password (for display)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def redact_obj(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


class JsonFormatter(logging.Formatter):
    """One JSON object per line, secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "severity": _LEVEL_TO_SEVERITY.get(record.levelname, record.levelname),
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        if run_id:
            entry["run_id"] = run_id
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(redact_obj(entry), default=str, ensure_ascii=False))


def setup(level: str | None = None, stream: Any = None) -> None:
    """Install the JSON handler on the ``safesync`` logger (idempotent)."""
    logger = logging.getLogger("safesync")
    if any(getattr(h, "_safesync", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._safesync = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level or os.environ.get("SAFESYNC_LOG_LEVEL", "INFO"))
    logger.propagate = False


def get_logger(name: str) -> "Logger":
    return Logger(logging.getLogger(f"safesync.{name}"))


class Logger:
    """A thin adapter: ``log.info("msg", table="x", rows=3)`` puts keyword
    fields into the JSON entry."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, msg: str, exc_info: Any = None, **fields: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, exc_info=exc_info, extra={"fields": fields})

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, **fields)

    def exception(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, exc_info=True, **fields)
