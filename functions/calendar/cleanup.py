"""Weekly cleanup: reconcile the window against two listings, drop obsolete
rows past the retention horizon.

An event counts as present on Google only when both fully paged listings
agree on it (same etag); a row neither listing has is asked for by id and
counts as gone only when Google says so (404/410 or cancelled), as in a full
sync. Anything that changed between the two listings is left for the next
run. Repairs: ``missing`` (Google has it, we do not), ``extra`` (we hold a
synced row Google says is gone), ``etag_mismatch`` (we hold a different
version) — each repaired through the same planning as a pull, and counted.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg.rows import dict_row

from . import state
from .context import SyncContext
from .pull import Puller, full_params, list_all


class Cleanup:
    def __init__(self, ctx: SyncContext, calendar_id: str) -> None:
        self.ctx, self.cal = ctx, calendar_id
        self.puller = Puller(ctx, calendar_id)

    def reconcile(self) -> None:
        ctx = self.ctx
        window = ctx.window(ctx.cfg.full_days)
        params = full_params(ctx)
        first = {i["id"]: i for i in list_all(ctx, self.cal, params).items}
        second = {i["id"]: i for i in list_all(ctx, self.cal, params).items}
        agreed = {k: v for k, v in second.items() if k in first and first[k].get("etag") == v.get("etag")}
        ctx.counts["unsettled"] += len(set(first) ^ set(second)) + len(set(first) & set(second)) - len(agreed)
        with ctx.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select * from calendar.events where calendar_id = %s and google_event_id = any(%s)",
                [self.cal, list(agreed)],
            )
            held = {r["google_event_id"]: r for r in cur.fetchall()}
        # Absent from both listings: asked by id, deleted only if Google says gone.
        absent = self.puller._confirm_absent(list({**first, **second}.values()), window)
        ctx.counts["extra"] += len(absent.deletes)
        repairs = []
        for gid, item in agreed.items():
            row = held.get(gid)
            if row is None or row["deleted"]:
                ctx.counts["missing"] += 1
            elif row["etag"] != item.get("etag"):
                ctx.counts["etag_mismatch"] += 1
            else:
                continue
            repairs.append(item)
        # Planned as a listing page is (a cancelled occurrence is not a live event).
        [plan] = self.puller.plan_pages([repairs], None)
        self.puller._guard(list(agreed.values()), len(plan.deletes) + len(absent.deletes), window, True)
        with ctx.conn.transaction():
            self.puller._write(plan)
            self.puller._write(absent)

    def drop_obsolete(self) -> None:
        """Rows (and audit entries) past ``retention_days``: deleted rows
        whose deletion is synced, and Google rows that ended before it."""
        ctx = self.ctx
        horizon = ctx.now - timedelta(days=ctx.cfg.retention_days)
        with ctx.conn.transaction():
            dropped = ctx.conn.execute(
                """
                delete from calendar.events
                 where calendar_id = %(cal)s and sync_status = 'synced'
                   and ((deleted and deleted_at < %(h)s)
                     or (source = 'google_calendar' and recurrence is null
                         and (end_at < %(h)s or end_date < %(h)s::date)))
                """,
                {"cal": self.cal, "h": horizon},
            ).rowcount
            ctx.conn.execute("delete from calendar.audit_log where calendar_id = %s and at < %s", [self.cal, horizon])
            ctx.conn.execute("delete from calendar.rate_limits where window_start < now() - interval '1 day'")
            # Google retries a message for a while, not for a week: older pings cannot come again.
            ctx.conn.execute("delete from calendar.notifications where calendar_id = %s and received_at < now() - interval '7 days'", [self.cal])
            ctx.counts["dropped_obsolete"] += dropped
            if dropped:
                state.audit(ctx.conn, ctx.run_id, "state", "dropped obsolete rows", calendar_id=self.cal,
                            detail={"rows": dropped, "horizon": horizon.isoformat()})
