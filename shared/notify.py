"""Failure notifications to ``SAFESYNC_NOTIFY_URL``.

The message is JSON with a Slack-compatible ``text`` field (Slack's control
characters escaped) plus structured fields (as they are), so the same URL
can be a Slack incoming webhook or anything else.
Delivery problems are logged and never fail the job.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from .log import get_logger, redact, redact_obj

log = get_logger("notify")


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
    try:
        with _opener().open(request, timeout=5) as response:
            response.read()
        return True
    except Exception as exc:  # any delivery failure is logged, never raised
        log.warning("notification not delivered", event=event, error=redact(str(exc)))
        return False


def report_failed(report_dict: Mapping[str, Any]) -> bool:
    """Notify about a failed or refused run."""
    job, action, status = report_dict.get("job"), report_dict.get("action"), report_dict.get("status")
    return send(
        f"run.{status}",
        f"{job} {action} {status}: {report_dict.get('summary', '')}",
        {"job": job, "action": action, "status": status, "run_id": report_dict.get("run_id"), "summary": report_dict.get("summary")},
    )
