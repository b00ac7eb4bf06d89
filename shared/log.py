"""JSON-lines logging with ``severity`` (what Cloud Logging reads) and
``run_id``, and redaction of every secret we know about.

Every line is redacted (``shared.redaction``: every known secret, in every
spelling, wherever it appears); ``redact``/``redact_obj``/``redact_url`` are
re-exported here because every module that logs also redacts.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any

from .redaction import redact, redact_obj, redact_url

__all__ = ["get_logger", "redact", "redact_obj", "redact_url", "run_id_var", "setup", "JsonFormatter", "Logger"]

run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)

_LEVEL_TO_SEVERITY = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}


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


def setup(default: str = "INFO", stream: Any = None) -> None:
    """Install the JSON handler on the ``safesync`` logger (idempotent), at
    ``SAFESYNC_LOG_LEVEL`` in any case (``debug`` as most tools take it:
    ``Logger.setLevel`` knows only ``DEBUG``, and raised on anything else),
    else ``default``. An unknown level is one warning, never a traceback."""
    logger = logging.getLogger("safesync")
    if any(getattr(h, "_safesync", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._safesync = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
    wanted = os.environ.get("SAFESYNC_LOG_LEVEL", "").strip()
    level = wanted.upper() or default
    logger.setLevel(level if level in _LEVEL_TO_SEVERITY else default)
    if level not in _LEVEL_TO_SEVERITY:
        names = list(_LEVEL_TO_SEVERITY)
        get_logger("log").warning(f"SAFESYNC_LOG_LEVEL {wanted!r} is not {', '.join(names[:-1])} or {names[-1]}: logging at {default}")


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
