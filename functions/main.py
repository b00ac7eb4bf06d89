"""HTTP entry points: one thin functions-framework target per job.

Deploy with ``--source functions/main.py --target <name>`` (or
``FUNCTION_TARGET``). Each target only wires auth and body parsing
(``safesync.shared.http.serve``) to its job module, imported on first use so
a cold start that is rejected never pays for a job's imports.
"""

from __future__ import annotations

import importlib

import functions_framework

from safesync.functions import registry
from safesync.shared.http import Call, google_channel_principal, serve

TARGETS = registry.TARGETS


def _dispatch(target: str, request):
    entry = registry.ROUTES[target]

    def handler(call: Call):
        module = importlib.import_module(f"safesync.functions.{entry.module}")
        return getattr(module, entry.handler)(call)

    # Google's push notifications carry a channel token instead of our
    # credentials; the calendar job verifies it against the channels it opened.
    auth = google_channel_principal if target == "calendar_notify" else None
    return serve(request, target, handler, methods=entry.methods, allow_vercel=entry.vercel, authenticate_with=auth)


@functions_framework.http
def backup(request):
    """Backups: create (manual/predeploy, Vercel webhook), list, verify, restore, prune."""
    return _dispatch("backup", request)


@functions_framework.http
def content_sync(request):
    """Content sync dev → prod: compare, dry-run, sync."""
    return _dispatch("content_sync", request)


@functions_framework.http
def staging_clone(request):
    """Exact, atomic clone of dev into staging."""
    return _dispatch("staging_clone", request)


@functions_framework.http
def validate(request):
    """Integrity checks on one database or between two."""
    return _dispatch("validate", request)


@functions_framework.http
def calendar_sync(request):
    """Two-way Google Calendar sync, events read API, push notifications."""
    return _dispatch("calendar_sync", request)


def _for_a_person(request) -> bool:
    """A browser without API credentials: the login form, its POST, a
    one-time link, or the page with a session cookie."""
    if request.headers.get("Authorization") or request.headers.get("Upstash-Signature"):
        return False
    if request.method == "POST":
        return request.mimetype == "application/x-www-form-urlencoded"
    return request.method == "GET" and ("link" in request.args or "text/html" in request.headers.get("Accept", ""))


@functions_framework.http
def status(request):
    """Health of everything at a glance: JSON, or a page a person logs in to."""
    if _for_a_person(request):
        from safesync.functions.status.browser import handle

        return handle(request)
    return _dispatch("status", request)


@functions_framework.http
def migrate(request):
    """Safe migrations: plan, rehearse on a clone, apply with backup and rollback (admin token)."""
    return _dispatch("migrate", request)


@functions_framework.http
def calendar_notify(request):
    """Google Calendar push notifications (``events.watch`` channels)."""
    return _dispatch("calendar_notify", request)
