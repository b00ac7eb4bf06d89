"""``status`` as a run (``runner.execute``, not stored, no lock) and the
one-time link to the page (``status --link``)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from safesync.shared import sessions
from safesync.shared.config import Settings
from safesync.shared.errors import ConfigError
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute

from .collect import collect


def status(settings: Settings) -> Answer:
    def job(report: Report) -> None:
        data = collect(settings)
        report.details.update(data)
        report.tables["backups"] = data.get("backups") if isinstance(data.get("backups"), list) else []
        report.tables["last runs"] = data.get("runs") if isinstance(data.get("runs"), list) else []
        if data["health"] == "ok":
            report.summary = "all is well"
        else:
            report.problems(f"{data['health']}: " + "; ".join(r.split(": ", 1)[1] for r in data["reasons"]))

    return execute(settings, Report("status", "show"), job, record=False)


def page_url(explicit: str | None, env=os.environ) -> str:
    """Where the status page is: ``--url``, else the status target's base
    URL (``SAFESYNC_STATUS_BASE_URL``, else ``SAFESYNC_PUBLIC_URL``) + ``/status``."""
    if explicit:
        url = explicit
    else:
        base = (env.get("SAFESYNC_STATUS_BASE_URL") or env.get("SAFESYNC_PUBLIC_URL") or "").strip().rstrip("/")
        if not base:
            raise ConfigError("set SAFESYNC_PUBLIC_URL (or SAFESYNC_STATUS_BASE_URL), or pass --url, to make a status link")
        url = f"{base}/status"
    if not url.startswith(("https://", "http://")) or "?" in url or "#" in url:
        raise ConfigError(f"status page URL {url!r} must be http(s) without a query")
    return url


def status_link(url: str) -> Answer:
    """A one-time link to the page, signed like a session (nothing secret in it)."""
    code = sessions.issue(sessions.LINK, sessions.link_kind())
    expires = datetime.fromtimestamp(int(code.split(".")[2]), timezone.utc)
    link = f"{url}?link={code}"
    minutes = sessions.TTL_S[sessions.LINK] // 60
    body = {
        "ok": True, "status": "ok", "job": "status", "action": "link", "link": link, "expires_at": expires.isoformat(),
        "summary": f"open it within {minutes} minutes; it works once: {link}",
    }
    return Answer(200, body)
