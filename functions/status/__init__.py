"""``status``: is all well? One glance, as JSON, or as a page a person opens.

- ``collect``: what is shown (backups and their timeline, last runs, the
  last content sync, calendar, storage, what needs attention first);
- ``page``: the HTML (inline SVG size trend, no scripts);
- ``browser``: log in once in a browser (session cookie) or with a one-time
  link from ``safesync status --link``.

Read-only apart from two kinds of marker objects (a stale backup notified,
a link used); it takes no lock.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from safesync.shared import sessions
from safesync.shared.config import Settings
from safesync.shared.errors import ConfigError
from safesync.shared.http import Call, validate_body
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute

from .collect import collect
from .page import HEADERS, render_status


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


class _Body(BaseModel):
    """status takes no parameters; anything else is a mistake worth a 400."""

    model_config = ConfigDict(extra="forbid")


def handle_http(call: Call):
    validate_body(_Body, call.body)
    answer = status(call.settings)
    if "text/html" in call.headers.get("Accept", ""):
        import flask

        response = flask.Response(render_status(answer.body), status=200 if answer.status < 500 else answer.status, mimetype="text/html")
        response.headers.update(HEADERS)
        return response
    return answer


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


def _cli(args: argparse.Namespace, settings: Settings) -> Answer:
    if args.link:
        return status_link(page_url(args.url))
    return status(settings)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", help="is all well? last backups, last runs, calendar health, storage", parents=[parent])
    p.add_argument("--link", action="store_true", help="print a one-time link (10 min) that opens the status page in a browser")
    p.add_argument("--url", help="the status page's URL (default: $SAFESYNC_STATUS_BASE_URL or $SAFESYNC_PUBLIC_URL, + /status)")
    p.set_defaults(func=_cli)
