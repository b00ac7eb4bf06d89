"""HTTP entry points: one thin functions-framework target per job.

Deploy with ``--source functions/main.py --target <name>`` (or
``FUNCTION_TARGET``). Each target only wires auth and body parsing
(``safesync.shared.http.serve``) to its job module, imported on first use so
a cold start that is rejected never pays for a job's imports.
"""

from __future__ import annotations

import importlib

import functions_framework

from safesync.shared.http import Call, serve

TARGETS = ("backup", "content_sync", "staging_clone", "validate", "calendar_sync", "status")

# target -> (job module, HTTP methods, Vercel webhooks accepted)
_ROUTES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "backup": ("backup", ("POST",), True),
    "content_sync": ("content_sync", ("POST",), False),
    "staging_clone": ("staging_clone", ("POST",), False),
    "validate": ("validate", ("POST",), False),
    "calendar_sync": ("calendar", ("POST",), False),
    "status": ("status", ("GET", "POST"), False),
}


def _dispatch(target: str):
    module_name, methods, vercel = _ROUTES[target]

    def handler(call: Call):
        module = importlib.import_module(f"safesync.functions.{module_name}")
        return module.handle_http(call)

    return lambda request: serve(request, target, handler, methods=methods, allow_vercel=vercel)


@functions_framework.http
def backup(request):
    """Backups: create (manual/predeploy, Vercel webhook), list, verify, restore, prune."""
    return _dispatch("backup")(request)


@functions_framework.http
def content_sync(request):
    """Content sync dev → prod: compare, dry-run, sync."""
    return _dispatch("content_sync")(request)


@functions_framework.http
def staging_clone(request):
    """Exact, atomic clone of dev into staging."""
    return _dispatch("staging_clone")(request)


@functions_framework.http
def validate(request):
    """Integrity checks on one database or between two."""
    return _dispatch("validate")(request)


@functions_framework.http
def calendar_sync(request):
    """Two-way Google Calendar sync, events read API, push notifications."""
    return _dispatch("calendar_sync")(request)


@functions_framework.http
def status(request):
    """Health of everything at a glance (JSON, or HTML for browsers)."""
    return _dispatch("status")(request)
