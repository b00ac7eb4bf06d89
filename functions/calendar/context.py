"""What one calendar run carries: connection, client, cipher, retry policy,
run id, counters, and the time spans it changed (to invalidate read caches)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar

import psycopg

from safesync.shared.config import CalendarSection

from . import state
from .crypto import Cipher
from .google import CalendarClient
from .mapping import EventData, span
from .retry import Failure, RetryPolicy

T = TypeVar("T")


@dataclass
class SyncContext:
    cfg: CalendarSection
    conn: psycopg.Connection
    client: CalendarClient
    cipher: Cipher
    policy: RetryPolicy
    run_id: str
    now: datetime
    force: bool = False
    counts: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    spans: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    def window(self, days: int) -> tuple[datetime, datetime]:
        """From a day back (all-day events far east/west of UTC, events in
        progress) to ``days`` ahead."""
        return self.now - timedelta(days=1), self.now + timedelta(days=days)

    def api(self, calendar_id: str, what: str, fn: Callable[[], T]) -> T:
        """A single Google call with retries; each retry is audited."""

        def on_retry(failure: Failure, attempt: int) -> None:
            self.counts["api_retries"] += 1
            state.audit(
                self.conn, self.run_id, "attempt", f"retry {what}", calendar_id=calendar_id,
                detail={"attempt": attempt, "error": failure.describe()},
            )

        return self.policy.call(fn, on_retry)

    def touched(self, calendar_id: str, *datas: EventData | None) -> None:
        for data in datas:
            s = span(data) if data else None
            if s:
                self.spans.append((calendar_id, s[0], s[1]))

    def detail(self) -> dict[str, Any]:
        return dict(self.counts)
