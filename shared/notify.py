"""Failure notifications to ``SAFESYNC_NOTIFY_URL``.

The message is JSON with a Slack-compatible ``text`` field (Slack's control
characters escaped) plus structured fields (as they are), so the same URL
can be a Slack incoming webhook or anything else.
A transient delivery problem (429, 5xx, no connection) is tried once more;
what still fails is logged and never fails the job.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

from .log import get_logger, redact, redact_obj

log = get_logger("notify")

ATTEMPTS = 2  # a transient failure is tried once more; a job's failure path waits at most ~15 s
TIMEOUT_S = 5
PAUSE_S = 1.0
MAX_PAUSE_S = 5.0


def _opener():
    """urllib without redirects: a redirect is a failed delivery (an
    HTTPError naming its status). urllib follows a 301/302/303 answer to a
    POST with a body-less GET, and the 200 of the page it lands on read as
    "delivered". Imported here, not at import: every job imports this
    module, few send (~50 ms)."""
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
            return None

    return urllib.request.build_opener(NoRedirects)


def slack_text(text: str) -> str:
    """``text`` as Slack shows it literally: ``&``, ``<`` and ``>`` are its
    control characters (``<!channel>`` notifies everyone, ``<url|label>`` is
    a link), sent as HTML entities, and only those three (Slack's formatting
    reference, "Escaping text"). A name from a database must not ping or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def send(event: str, text: str, fields: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """POST one notification; True if it was delivered."""
    env = env if env is not None else os.environ
    url = env.get("SAFESYNC_NOTIFY_URL", "").strip()
    if not url:
        return False
    import urllib.request

    payload = redact_obj({"text": f"safesync: {text}", "event": event, **(fields or {})})
    # after redaction, which must see each secret as it is
    payload["text"] = slack_text(payload["text"])
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "safesync"},
        method="POST",
    )
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with _opener().open(request, timeout=TIMEOUT_S) as response:
                response.read()
            return True
        except Exception as exc:  # any delivery failure is logged, never raised
            pause = _retry_after(exc)
            if pause is None or attempt == ATTEMPTS:
                log.warning("notification not delivered", event=event, error=redact(str(exc)), attempts=attempt)
                return False
            time.sleep(pause)
    return False


def _retry_after(exc: Exception) -> float | None:
    """Seconds to wait before trying again, or None when another attempt
    cannot help: a 429 or 5xx answer (Slack's rate limit is a 429 with
    ``Retry-After``, honoured up to ``MAX_PAUSE_S``), a connection that failed
    or timed out. A 4xx (400 invalid_payload, 404 no_service) or a redirect
    will fail again."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        if exc.code != 429 and exc.code < 500:
            return None
        asked = (exc.headers.get("Retry-After") or "").strip() if exc.headers else ""
        return min(float(asked), MAX_PAUSE_S) if asked.isascii() and asked.isdigit() else PAUSE_S
    return PAUSE_S if isinstance(exc, (urllib.error.URLError, OSError)) else None


def report_failed(report_dict: Mapping[str, Any]) -> bool:
    """Notify about a failed or refused run."""
    job, action, status = report_dict.get("job"), report_dict.get("action"), report_dict.get("status")
    return send(
        f"run.{status}",
        f"{job} {action} {status}: {report_dict.get('summary', '')}",
        {"job": job, "action": action, "status": status, "run_id": report_dict.get("run_id"), "summary": report_dict.get("summary")},
    )
