"""HTTP entry points: one thin functions-framework target per entry of
``registry.py`` (a module-level function named for the target).

Deploy with ``--source functions/main.py --target <name>`` (or
``FUNCTION_TARGET``). Each target only wires auth and body parsing
(``safesync.shared.http.serve``) to its job module, imported on first use so
a cold start that is rejected never pays for a job's imports.
"""

from __future__ import annotations

import importlib

import functions_framework

from safesync.functions import registry
from safesync.shared import log
from safesync.shared.http import Call, google_channel_principal, serve

TARGETS = registry.TARGETS

# JSON lines with severity, run id and fields, every secret redacted — as the
# CLI sets up. Without it, functions-framework left our loggers to Python's
# last-resort handler: bare messages, and tracebacks unredacted.
log.setup()


def _for_a_person(request) -> bool:
    """A browser without API credentials: the login form, its POST, a
    one-time link, or the page with a session cookie."""
    if request.headers.get("Authorization") or request.headers.get("Upstash-Signature"):
        return False
    if request.method == "POST":
        return request.mimetype == "application/x-www-form-urlencoded"
    return request.method == "GET" and ("link" in request.args or "text/html" in request.headers.get("Accept", ""))


def _dispatch(target: str, request):
    entry = registry.ROUTES[target]
    if target == "status" and _for_a_person(request):
        from safesync.functions.status.browser import handle

        return handle(request)

    def handler(call: Call):
        module = importlib.import_module(f"safesync.functions.{entry.module}")
        return getattr(module, entry.handler)(call)

    # Google's push notifications carry a channel token instead of our
    # credentials; the calendar job verifies it against the channels it opened.
    auth = google_channel_principal if target == "calendar_notify" else None
    return serve(request, target, handler, methods=entry.methods, allow_vercel=entry.vercel, authenticate_with=auth)


def _target(entry: registry.Entry):
    """The module-level function functions-framework finds by the target's name."""

    def function(request):
        return _dispatch(entry.target, request)

    function.__name__ = function.__qualname__ = entry.target
    function.__doc__ = entry.summary
    return functions_framework.http(function)


for _entry in registry.ROUTES.values():
    globals()[_entry.target] = _target(_entry)
