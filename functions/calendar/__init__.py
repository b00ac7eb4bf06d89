"""``calendar_sync``: two-way Google Calendar sync, status, events read API,
push notifications.

This module is the job's face, the only part other modules may import:
``run_sync(settings, mode, …) -> Answer`` (``sync.py``: the lock, the run
report), ``calendar_status(settings) -> dict`` (the status page reads it),
``handle_notify(settings, headers) -> Answer`` (Google's push notifications,
verified by channel token, never by the bearer/QStash auth); the HTTP
targets (``http.py``: ``handle_http`` for ``calendar_sync``,
``handle_notify_call`` for ``calendar_notify``, ``CalendarBody``) and
``register_cli`` (``cli.py``) wrap them; ``parse_encryption_key`` is how
``SAFESYNC_ENCRYPTION_KEY`` is read (doctor judges it by the same reading).
"""

from .cli import register_cli
from .crypto import KEY_ENV as ENCRYPTION_KEY_ENV
from .crypto import parse_key as parse_encryption_key
from .http import CalendarBody, handle_http, handle_notify_call
from .notify import handle_notification as handle_notify
from .status import calendar_status
from .sync import run_sync

__all__ = [
    "ENCRYPTION_KEY_ENV", "CalendarBody", "calendar_status", "handle_http", "handle_notify", "handle_notify_call",
    "parse_encryption_key", "register_cli", "run_sync",
]
