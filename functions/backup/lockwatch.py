"""A bounded lock wait for a restore.

pg_restore's script sets ``lock_timeout = 0`` itself (as pg_dump's output
does), so neither PGOPTIONS nor the role's settings bound it: a restore into
a database where the application holds a lock — a session idle in a
transaction that read a table — waits forever for the ACCESS EXCLUSIVE lock
its ``DROP`` needs, and every query the application sends to that table
queues behind the restore meanwhile.

``LockWatch`` watches the restore's backend (found by its unique
``application_name``) from a second connection and cancels it with
``pg_cancel_backend`` (allowed for the role's own backends, no privilege
needed) once it has waited on one lock longer than the limit. The restore
runs in one transaction, so the cancel rolls it back: the target is as it
was. ``cancelled`` then says what it waited for and who held it.
"""

from __future__ import annotations

import threading
from typing import Any

from safesync.shared.db import connect
from safesync.shared.log import get_logger, redact

log = get_logger("backup")

# The longest lock wait of the watched backend, with what it waits for and
# who blocks it. ``waitstart`` (PostgreSQL 14+) is when this wait began; older
# servers only say when the statement began, which is no later.
_WAITING = """
select l.pid, extract(epoch from now() - {since})::float8 as waited,
       coalesce(l.relation::regclass::text, l.locktype) as what, l.mode,
       (select coalesce(json_agg(json_build_object('pid', b.pid, 'application', b.application_name,
                                                    'user', b.usename, 'state', b.state) order by b.pid), '[]')
          from pg_stat_activity b where b.pid = any(pg_blocking_pids(l.pid))) as blockers
from pg_locks l join pg_stat_activity a on a.pid = l.pid
where not l.granted and a.application_name = %s and {since} is not null
order by waited desc limit 1
"""


def describe_blockers(blockers: list[dict[str, Any]]) -> str:
    """``pid 123 (application 'web', user 'app', idle in transaction)`` for each."""
    if not blockers:
        return "a session that has ended since"
    return ", ".join(
        f"pid {b['pid']} (application {str(b['application'] or '')[:64]!r}, user {b['user']!r}, {b['state'] or 'state unknown'})"
        for b in blockers
    )


class LockWatch:
    """Cancel the backend named ``application`` on ``url`` once it has waited
    more than ``limit_s`` seconds on a lock (a context manager: watches while
    inside). ``cancelled``: what it waited for, when it was cancelled;
    ``problem``: why the watch could not run (the restore then runs unbounded)."""

    def __init__(self, url: str, application: str, limit_s: float) -> None:
        self.url, self.application, self.limit_s = url, application, limit_s
        self.interval = min(1.0, max(0.05, limit_s / 4))
        self.cancelled: dict[str, Any] | None = None
        self.problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-lock-watch", daemon=True)

    def __enter__(self) -> "LockWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            with connect(self.url, autocommit=True, application_name="safesync-restore-watch") as conn:
                since = "l.waitstart" if conn.info.server_version >= 140000 else "a.query_start"
                query = _WAITING.format(since=since)
                while not self._stop.wait(self.interval):
                    row = conn.execute(query, [self.application]).fetchone()
                    if row is None or row[1] < self.limit_s:
                        continue
                    pid, waited, what, mode, blockers = row
                    # said before the cancel: the restore's failure can be seen before this thread runs again
                    self.cancelled = {"waited_s": round(waited, 1), "lock_on": what, "mode": mode, "blockers": blockers}
                    conn.execute("select pg_cancel_backend(%s)", [pid])
                    log.warning("restore cancelled after waiting on a lock", lock_on=what, waited_s=round(waited, 1))
                    return
        except Exception as exc:  # noqa: BLE001 - the restore goes on without the watch; the caller says so
            self.problem = redact(str(exc)).strip() or type(exc).__name__
