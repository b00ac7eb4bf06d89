"""The ``status`` HTTP target for API callers: JSON, or the page's HTML
when asked for ``text/html`` (a person without credentials goes to
``browser.py`` first)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from safesync.shared.http import Call, validate_body

from .jobs import status
from .page import HEADERS, render_status


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
