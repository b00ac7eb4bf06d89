"""``status``: is all well? One glance, as JSON, or as a page a person opens.

- ``collect``: what is shown (backups and their timeline, last runs, the
  last content sync, calendar, storage, what needs attention first);
- ``page``: the HTML (inline SVG size trend, no scripts);
- ``browser``: log in once in a browser (session cookie) or with a one-time
  link from ``safesync status --link``.

This module is the face: ``status(settings) -> Answer`` (``jobs.py``),
``handle_http`` (``http.py``), ``register_cli`` (``cli.py``).

Read-only apart from marker objects (a stale or missing backup notified, a
link used); it takes no lock.
"""

from .cli import register_cli
from .http import handle_http
from .jobs import status

__all__ = ["handle_http", "register_cli", "status"]
