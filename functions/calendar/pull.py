"""Google → Postgres, following Google's sync guide ("Synchronize resources
efficiently"): one unbounded full synchronization, then incremental syncs
with its token; a windowed listing reconciles, it never moves the token.

- Incremental lists with the stored ``syncToken`` and nothing else (the API
  forbids timeMin/timeMax/updatedMin/q/orderBy with it), follows every page
  with the identical query, and stores the new token in the transaction of
  the last page. Changes to rows we hold are always applied; new events only
  when they touch the incremental window.
- The token only ever comes from an unbounded listing (no timeMin/timeMax):
  a windowed listing's token would sync only that window, and storing it
  would lose every change outside the window made before it.
- No token, an expired one (410: "clear its storage and perform a full
  synchronization"), or an admin resync: the token is dropped at once (never
  reused), then every event is listed without bounds. New events are taken
  when they touch the full window; held rows are brought up to date whatever
  their time; a synced Google row the listing lacks is fetched by id
  (batched) and deleted only when Google says it is gone or cancelled.
- Full first syncs incrementally (so the token moves past everything), then
  lists the window (pages of up to 2500) to catch what incremental leaves
  out (events new to the window) and to confirm rows missing from it — by
  id, never deleting on absence alone. That listing's own token is dropped.
  Only rows that came from Google and are ``synced`` are candidates, so
  ``pending_sync``, ``local_only`` and app-made rows always survive.
- A cancelled exception of a live series hides that occurrence and is kept;
  any other cancelled event is a deletion (and takes its exceptions along).
- Before writing, a run that would delete more than ``max_delete_share`` of
  the calendar's rows, or a full listing that comes back empty while rows
  are held, is refused (422) unless forced by an admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from googleapiclient.errors import HttpError

from safesync.shared.errors import JobFailed, Refused

from . import state
from .batch import BatchRunner
from .conflicts import merge
from .context import SyncContext
from .mapping import (
    EventData, InvalidEventData, field_hashes, from_google, from_row, google_meta, original_start, overlaps, parse_instant, utc_text,
)
from .retry import classify
from .store import (
    DELETE_SQL, INSERT_SQL, UPDATE_MERGED_SQL, UPDATE_SYNCED_SQL, absent_candidates,
    delete_exceptions, execute_unless_edited, executemany, rows_by_google_id, synced_values, unpushed_instances,
)


class FullSyncRequired(Exception):
    """The stored sync token was refused with 410."""


@dataclass
class Listing:
    pages: list[list[dict[str, Any]]]
    sync_token: str | None
    time_zone: str | None = None  # the calendar's (every events.list answer carries it)

    @property
    def items(self) -> list[dict[str, Any]]:
        return [item for page in self.pages for item in page]


@dataclass
class PagePlan:
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)
    series_deleted: list[dict[str, Any]] = field(default_factory=list)
    etags: list[dict[str, Any]] = field(default_factory=list)  # rows that only adopt Google's current etag
    audits: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def api_failure(calendar_id: str, what: str, exc: BaseException) -> JobFailed:
    failure = classify(exc)
    return JobFailed(f"calendar {calendar_id}: {what} failed: {failure.describe()}", {"calendar_id": calendar_id, "status": failure.status, "reason": failure.reason})


def list_all(ctx: SyncContext, calendar_id: str, params: dict[str, Any]) -> Listing:
    """Every page of one listing, each page retried with the same query."""
    pages: list[list[dict[str, Any]]] = []
    page_token: str | None = None
    while True:
        query = dict(params, maxResults=ctx.cfg.page_size, singleEvents=False)
        if page_token:
            query["pageToken"] = page_token
        try:
            response = ctx.api(calendar_id, "events.list", lambda q=query: ctx.client.list_events(calendar_id, **q))
        except HttpError as exc:
            failure = classify(exc)
            if failure.status == 410:
                raise FullSyncRequired(failure.reason) from None
            raise api_failure(calendar_id, "events.list", exc) from None
        except Exception as exc:
            raise api_failure(calendar_id, "events.list", exc) from None
        pages.append(response.get("items", []))
        page_token = response.get("nextPageToken")
        if not page_token:
            return Listing(once(ctx, pages), response.get("nextSyncToken"), response.get("timeZone"))


def once(ctx: SyncContext, pages: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Each event of a listing once, in the copy read last (Google's state
    at the later moment). Google does not promise an event appears only
    once: pages are separate requests, and one edited between them may be
    met again; a second copy was planned as a second insert and the unique
    key stopped the whole run."""
    seen: set[str] = set()
    kept: list[list[dict[str, Any]]] = []
    for page in reversed(pages):
        fresh = []
        for item in reversed(page):
            if item["id"] in seen:
                ctx.counts["listed_twice"] += 1
                continue
            seen.add(item["id"])
            fresh.append(item)
        kept.append(fresh[::-1])
    return kept[::-1]


def full_params(ctx: SyncContext) -> dict[str, Any]:
    start, end = ctx.window(ctx.cfg.full_days)
    return {"timeMin": start.isoformat(), "timeMax": end.isoformat(), "showDeleted": False}


class Puller:
    """Applies listings of one calendar to its rows."""

    def __init__(self, ctx: SyncContext, calendar_id: str) -> None:
        self.ctx, self.cal = ctx, calendar_id
        self.listed_from = ctx.now  # when the token listing began (notifications before it are covered)
        self.malformed: dict[str, str] = {}  # Google events skipped as malformed in this run (id → error)
        self.rechecked = False  # the events earlier runs skipped were fetched again in this run

    # -- entry points -------------------------------------------------------
    def incremental(self) -> str:
        token = state.sync_token(self.ctx.conn, self.cal)
        if not token:
            self._note("state", "no sync token: full sync", {})
            return self.resync("no sync token")
        self.listed_from = state.begin_listing(self.ctx.conn, self.cal)
        try:
            listing = list_all(self.ctx, self.cal, {"syncToken": token})
        except FullSyncRequired as gone:
            self._note("state", "sync token expired: full sync", {"reason": str(gone)})
            self.ctx.counts["token_expired"] += 1
            return self.resync("410 fullSyncRequired")
        self.apply(listing, window=self.ctx.window(self.ctx.cfg.incremental_days), absent=None, keep_token=True)
        return "incremental"

    def resync(self, reason: str) -> str:
        """Google's full synchronization: the stored token is dropped first
        (committed: a failure below must not leave a dead token to retry),
        then every event is listed without time bounds."""
        with self.ctx.conn.transaction():
            state.store_token(self.ctx.conn, self.cal, None)
        self.listed_from = state.begin_listing(self.ctx.conn, self.cal)
        try:
            listing = list_all(self.ctx, self.cal, {})
        except FullSyncRequired as gone:  # no token was sent; Google said 410 anyway
            raise JobFailed(f"calendar {self.cal}: unbounded listing answered 410 ({gone})") from None
        self.ctx.counts["full_syncs"] += 1
        self.apply(listing, window=self.ctx.window(self.ctx.cfg.full_days), absent="all", keep_token=True)
        return f"full ({reason})"

    def full(self) -> str:
        """Incremental (or the resync it falls back to), then the window
        reconciled; the window listing's token is never stored."""
        how = self.incremental()
        if how != "incremental":
            return how  # the unbounded listing already covered the window
        try:
            listing = list_all(self.ctx, self.cal, full_params(self.ctx))
        except FullSyncRequired as gone:  # a windowed list never uses a token; Google said 410 anyway
            raise JobFailed(f"calendar {self.cal}: full listing answered 410 ({gone})") from None
        self.ctx.counts["full_syncs"] += 1
        self.apply(listing, window=self.ctx.window(self.ctx.cfg.full_days), absent="window", keep_token=False)
        return "full (scheduled)"

    # -- planning -----------------------------------------------------------
    def apply(self, listing: Listing, *, window, absent: str | None, keep_token: bool) -> None:
        """Write a listing page by page. ``absent``: which held rows the
        listing lacking them makes suspect (``"all"`` for an unbounded
        listing, ``"window"``, or None for a change listing); ``keep_token``:
        store the listing's sync token with its last page."""
        ctx, conn = self.ctx, self.ctx.conn
        ctx.counts["listed"] += len(listing.items)
        pages = listing.pages + [self._recheck_skipped(listing.items)]
        items = [item for page in pages for item in page]
        plans = self.plan_pages(pages, window)
        missing = self._confirm_absent(items, window if absent == "window" else None) if absent else PagePlan()
        deletions = sum(len(p.deletes) for p in plans + [missing])
        self._guard(listing.items, deletions, window, absent is not None)
        for index, plan in enumerate(plans):
            last = index == len(plans) - 1
            with conn.transaction():
                self._write(plan)
                if last:
                    self._write(missing)
                    if listing.time_zone:
                        state.store_time_zone(conn, self.cal, listing.time_zone)
                    state.settle_skipped(conn, self.cal, self.malformed, {i["id"] for i in items})
                    if keep_token:
                        state.store_token(conn, self.cal, listing.sync_token)
                        state.clear_notify_pending(conn, self.cal, self.listed_from)

    def plan_pages(self, pages: list[list[dict[str, Any]]], window) -> list[PagePlan]:
        """One plan per page of Google events (live, cancelled, series and
        their occurrences alike), against the rows held for them; new events
        only when they touch ``window`` (None: any)."""
        conn = self.ctx.conn
        items = [item for page in pages for item in page]
        existing = rows_by_google_id(conn, self.cal, [i["id"] for i in items] + [i["recurringEventId"] for i in items if i.get("recurringEventId")])
        instances = unpushed_instances(
            conn, self.cal, [key for i in items if i["id"] not in existing and (key := _instance_key(i)) is not None],
        )
        cancelled_series = {i["id"] for i in items if i.get("status") == "cancelled" and not i.get("recurringEventId")}
        listed_series = {i["id"] for i in items if i.get("status") != "cancelled" and not i.get("recurringEventId")}
        return [self._plan_page(page, existing, instances, cancelled_series, listed_series, window) for page in pages]

    def _plan_page(self, page, existing, instances, cancelled_series, listed_series, window) -> PagePlan:
        plan = PagePlan()
        for item in page:
            row = existing.get(item["id"])
            try:
                google_meta(item)  # the fields Google sets are readable before anything relies on them
                if row is None and item.get("recurringEventId"):
                    row = instances.get((item["recurringEventId"], original_start(item)))
                if item.get("status") == "cancelled":
                    self._plan_cancelled(plan, item, row, existing, cancelled_series, listed_series)
                else:
                    self._plan_live(plan, item, row, window)
            except InvalidEventData as exc:
                self._skip_malformed(plan, item, row, exc)
        return plan

    def _skip_malformed(self, plan: PagePlan, item: dict[str, Any], row, exc: InvalidEventData) -> None:
        """An event Google sent with a field we cannot read: skipped and
        named (warning, audit, the run not ok); its row, if held, is kept
        as it was — never deleted nor overwritten — and the others sync."""
        if item["id"] in self.malformed:  # a full run lists it twice (incremental, then the window)
            return
        self.malformed[item["id"]] = str(exc)
        self.ctx.counts["malformed_remote"] += 1
        self.ctx.warnings.append(f"{self.cal}/{item['id']}: Google's event is malformed ({exc}); skipped, the row kept as it was")
        plan.audits.append(("error", "Google's event malformed: skipped",
                            {"row": row or {"id": None, "google_event_id": item["id"]}, "error": str(exc)}))

    def _series_live(self, master_id: str, existing, cancelled_series, listed_series) -> bool:
        if master_id in cancelled_series:
            return False
        if master_id in listed_series:
            return True
        master = existing.get(master_id)
        return master is None or not master["deleted"]

    def _plan_cancelled(self, plan: PagePlan, item, row, existing, cancelled_series, listed_series) -> None:
        master_id = item.get("recurringEventId")
        if master_id and self._series_live(master_id, existing, cancelled_series, listed_series):
            # A hidden occurrence of a live series: kept as a cancelled exception.
            if row is not None and row["etag"] == item.get("etag") and row["event_status"] == "cancelled":
                self.ctx.counts["echoes"] += 1
                return
            if row is None and master_id not in existing and master_id not in listed_series:
                self.ctx.counts["skipped"] += 1  # a series we do not hold
                return
            data = cancelled_exception_data(item, existing.get(master_id), self.ctx)
            self._plan_live(plan, dict(item), row, None, data=data)
            return
        if row is None or row["deleted"]:
            return
        if row["sync_status"] == "local_only":
            # The app took this row out of the sync: Google's deletion is not
            # applied to it, as no Google edit is (it was deleted and marked synced).
            self.ctx.warnings.append(f"{self.cal}/{item['id']}: row is local_only but Google deleted it; left alone")
            return
        if row["sync_status"] in ("pending_sync", "sync_failed"):
            plan.audits.append(("conflict", "remote deletion wins over local edit", {"row": row, "lost_local_edit": True}))
        plan.deletes.append({"id": row["id"], "etag": item.get("etag"), "_row": row})
        if not master_id:
            plan.series_deleted.append({"calendar_id": self.cal, "master": item["id"]})

    def _plan_live(self, plan: PagePlan, item, row, window, data: EventData | None = None) -> None:
        """A live event: inserted when new (and touching ``window``, if
        given), else applied to the held row (update or three-way merge)."""
        ctx = self.ctx
        data = data or from_google(item)
        if row is None:
            if window is not None and not overlaps(data, window):
                ctx.counts["skipped"] += 1
                return
            plan.inserts.append({"calendar_id": self.cal, **synced_values(ctx, data, item), "_data": data})
            return
        if row["etag"] and row["etag"] == item.get("etag"):
            ctx.counts["echoes"] += 1  # our own write coming back, or nothing new
            return
        if row["sync_status"] == "local_only":
            ctx.warnings.append(f"{self.cal}/{item['id']}: row is local_only but Google has it; left alone")
            return
        try:
            local = from_row(row, ctx.cipher)
        except InvalidEventData as exc:
            # The app's row is malformed: Google's change is not applied over
            # it (that would drop the app's other edits); its push fails with
            # the reason, and once the app repairs it the push meets the 412
            # and merges.
            ctx.counts["malformed_local"] += 1  # a synced row is never pushed: only this says it is stale
            ctx.warnings.append(f"{self.cal}/{item['id']}: row is malformed ({exc}); Google's change not applied")
            plan.audits.append(("error", "Google's change not applied: row malformed", {"row": row, "error": str(exc)}))
            return
        locally_edited = row["sync_status"] in ("pending_sync", "sync_failed") or field_hashes(local) != (row["synced_field_hashes"] or {})
        if row["deleted"] and locally_edited:
            plan.audits.append(("conflict", "local deletion wins over remote edit", {"row": row, "remote_etag": item.get("etag")}))
            # The push deletes with If-Match: with Google's current etag, so this
            # conflict (audited here) is not met and audited again as a 412.
            plan.etags.append({"id": row["id"], "etag": item.get("etag"), "_row": row})
            return
        if not locally_edited:
            plan.updates.append({"id": row["id"], **synced_values(ctx, data, item), "_data": data, "_row": row})
            return
        result = merge(
            row["synced_field_hashes"], local, data,
            local_time=row["local_updated_at"],
            remote_time=parse_instant(item["updated"]) if item.get("updated") else None,
        )
        if result.conflict:
            plan.audits.append(("conflict", f"three-way merge ({result.kind})", {"row": row, **result.describe()}))
        values = synced_values(ctx, data, item)
        if field_hashes(result.data) == field_hashes(data):
            plan.updates.append({"id": row["id"], **values, "_data": data, "_row": row})
        else:
            merged = synced_values(ctx, result.data, item)
            merged.update(synced_hash=values["synced_hash"], synced_field_hashes=values["synced_field_hashes"])
            plan.merges.append({"id": row["id"], **merged, "_data": result.data, "_row": row})

    # -- events skipped by earlier runs ----------------------------------------
    def _recheck_skipped(self, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Events an earlier run skipped as malformed that this listing does
        not return — a change listing never returns an unchanged event
        again, though its token moved past it — fetched by id (once a run)
        and planned like listed ones: still malformed, skipped and named
        again; readable, applied. A 404/410 is Google's deletion, given as
        the marker a change listing shows for one (id, status cancelled).
        One that cannot be fetched now stays remembered and the run not ok."""
        if self.rechecked:
            return []
        self.rechecked = True
        ctx, listed_ids = self.ctx, {i["id"] for i in listed}
        wanted = [gid for gid in state.skipped_events(ctx.conn, self.cal) if gid not in listed_ids]
        if not wanted:
            return []
        outcomes = BatchRunner(ctx, self.cal).run([(gid, lambda g=gid: ctx.client.get_request(self.cal, g)) for gid in wanted])
        page: list[dict[str, Any]] = []
        for gid, response, failure in outcomes:
            ctx.counts["skipped_rechecked"] += 1
            if failure is None:
                page.append(response)
            elif failure.status in (404, 410):
                page.append({"id": gid, "status": "cancelled"})
            else:
                ctx.counts["malformed_remote"] += 1
                ctx.warnings.append(f"{self.cal}/{gid}: skipped earlier as malformed, fetching it again failed ({failure.describe()}); still skipped")
        return page

    # -- full-sync absence check ----------------------------------------------
    def _confirm_absent(self, items, window) -> PagePlan:
        """Held rows the listing did not return (within ``window``, or any
        time for an unbounded listing), checked one by one (batched GETs):
        deleted only if Google says 404/410/cancelled."""
        ctx = self.ctx
        candidates = absent_candidates(ctx.conn, self.cal, [i["id"] for i in items], window)
        plan = PagePlan()
        if not candidates:
            return plan
        runner = BatchRunner(ctx, self.cal)
        outcomes = runner.run([(row, lambda r=row: ctx.client.get_request(self.cal, r["google_event_id"])) for row in candidates])
        for row, response, failure in outcomes:
            ctx.counts["absent_checked"] += 1
            if failure is not None and failure.status in (404, 410):
                plan.deletes.append({"id": row["id"], "etag": None, "_row": row})
                if not row["recurring_event_id"]:
                    plan.series_deleted.append({"calendar_id": self.cal, "master": row["google_event_id"]})
                plan.audits.append(("state", "absent from listing and gone on Google: deleted", {"row": row, "status": failure.status}))
            elif failure is not None:
                ctx.warnings.append(f"{self.cal}/{row['google_event_id']}: absent from listing, check failed ({failure.describe()}); kept")
            elif response.get("status") == "cancelled" and not response.get("recurringEventId"):
                plan.deletes.append({"id": row["id"], "etag": response.get("etag"), "_row": row})
                plan.series_deleted.append({"calendar_id": self.cal, "master": row["google_event_id"]})
            else:
                try:
                    data = cancelled_exception_data(response, None, ctx) if response.get("status") == "cancelled" else None
                    self._plan_live(plan, response, row, None, data=data)
                except InvalidEventData as exc:
                    self._skip_malformed(plan, response, row, exc)
        return plan

    def _guard(self, items, deletions: int, window, full: bool) -> None:
        ctx, conn = self.ctx, self.ctx.conn
        if ctx.force:
            return
        held = conn.execute(
            "select count(*) from calendar.events where calendar_id = %s and not deleted", [self.cal]
        ).fetchone()[0]
        if full and not items:
            in_window = conn.execute(
                """
                select count(*) from calendar.events
                 where calendar_id = %(cal)s and source = 'google_calendar' and sync_status = 'synced' and not deleted
                   and ((not all_day and start_at < %(end)s and end_at > %(start)s)
                     or (all_day and start_date < %(end)s::date and end_date > %(start)s::date))
                """,
                {"cal": self.cal, "start": window[0], "end": window[1]},
            ).fetchone()[0]
            if in_window:
                raise Refused(
                    f"calendar {self.cal} listed empty while {in_window} synced row(s) are in the window; nothing deleted",
                    {"calendar_id": self.cal, "rows_in_window": in_window},
                )
        limit = max(ctx.cfg.max_delete_share * held, ctx.cfg.delete_guard_min_rows)
        if deletions > limit:
            raise Refused(
                f"calendar {self.cal}: run would delete {deletions} of {held} row(s), over the limit "
                f"(max_delete_share={ctx.cfg.max_delete_share}); nothing deleted",
                {"calendar_id": self.cal, "deletions": deletions, "held": held},
            )

    # -- writing --------------------------------------------------------------
    def _write(self, plan: PagePlan) -> None:
        ctx, conn = self.ctx, self.ctx.conn
        strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]  # noqa: E731
        executemany(conn, INSERT_SQL, strip(plan.inserts))
        plan.updates = self._unless_edited(UPDATE_SYNCED_SQL, plan.updates)
        plan.merges = self._unless_edited(UPDATE_MERGED_SQL, plan.merges)
        kept = {e["_row"]["google_event_id"] for e in plan.deletes}
        plan.deletes = self._unless_edited(DELETE_SQL, plan.deletes)
        self._unless_edited("update calendar.events set etag = %(etag)s where id = %(id)s", plan.etags)
        kept -= {e["_row"]["google_event_id"] for e in plan.deletes}  # series whose row the app edited meanwhile
        plan.series_deleted = [s for s in plan.series_deleted if s["master"] not in kept]
        for entry in plan.series_deleted:
            count, lost = delete_exceptions(conn, self.cal, entry["master"])
            ctx.counts["deleted"] += count
            for row_id, google_id in lost:
                ctx.counts["conflicts"] += 1
                state.audit(conn, ctx.run_id, "conflict", "remote deletion of the series wins over a local change to its occurrence",
                            calendar_id=self.cal, event_id=row_id, google_event_id=google_id,
                            detail={"series": entry["master"], "lost_local_edit": True})
        ctx.counts["inserted"] += len(plan.inserts)
        ctx.counts["updated"] += len(plan.updates)
        ctx.counts["merged"] += len(plan.merges)
        ctx.counts["deleted"] += len(plan.deletes)
        for entry in plan.inserts:
            ctx.touched(self.cal, entry["_data"])
        for entry in plan.updates + plan.merges:
            ctx.touched(self.cal, entry["_data"], from_row(entry["_row"], ctx.cipher))
        for entry in plan.deletes:
            ctx.touched(self.cal, from_row(entry["_row"], ctx.cipher, lenient=True))
        if plan.series_deleted:
            ctx.spans.append((self.cal, *_everything()))
        for kind, action, detail in plan.audits:
            row = detail.pop("row", None)
            if kind == "conflict":
                ctx.counts["conflicts"] += 1
            state.audit(
                conn, ctx.run_id, kind, action, calendar_id=self.cal,
                event_id=row["id"] if row else None, google_event_id=row["google_event_id"] if row else None, detail=detail,
            )

    def _unless_edited(self, sql: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write ``entries`` (each planned from its ``_row``) except to rows
        the app edited after they were read — the plan was made before this
        run's Google calls and would overwrite that edit. Those rows keep the
        app's content, stay pending and are reconciled by the push (412 →
        three-way merge); the skip is counted, warned and audited. Returns
        the entries written."""
        if not entries:
            return entries
        ctx = self.ctx
        params = [{**{k: v for k, v in e.items() if not k.startswith("_")}, "seen_local": e["_row"]["local_updated_at"]} for e in entries]
        written = execute_unless_edited(ctx.conn, sql, params)
        for entry in entries:
            if entry["id"] in written:
                continue
            row = entry["_row"]
            ctx.counts["edited_during_sync"] += 1
            ctx.warnings.append(f"{self.cal}/{row['google_event_id']}: edited in the app during the sync; kept, pushed with a merge")
            state.audit(ctx.conn, ctx.run_id, "conflict", "edited in the app during the sync: Google's change not applied, merged on push",
                        calendar_id=self.cal, event_id=row["id"], google_event_id=row["google_event_id"], detail={})
        return [e for e in entries if e["id"] in written]

    def _note(self, kind: str, action: str, detail: dict[str, Any]) -> None:
        state.audit(self.ctx.conn, self.ctx.run_id, kind, action, calendar_id=self.cal, detail=detail)


def _instance_key(item: dict[str, Any]) -> tuple[str, str] | None:
    """(series, original start) of a listed occurrence; None for any other
    event, or one whose Google fields are unreadable (skipped and named
    when its page is planned)."""
    if not item.get("recurringEventId"):
        return None
    try:
        return google_meta(item)["recurring_event_id"], original_start(item)
    except InvalidEventData:
        return None


def _everything():
    return datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc)


def cancelled_exception_data(item: dict[str, Any], master_row: dict[str, Any] | None, ctx: SyncContext) -> EventData:
    """A cancelled occurrence: Google may send only id, status and the
    original start; its time is then the original slot (length from the
    series when we hold it)."""
    data = from_google(item)
    if data["when"] is None:
        original = original_start(item)
        if "T" in original:
            start = parse_instant(original)
            length = timedelta(0)
            if master_row is not None and not master_row["all_day"]:
                length = master_row["end_at"] - master_row["start_at"]
            data["when"] = {"all_day": False, "start": utc_text(start), "end": utc_text(start + length)}
        else:
            day = date.fromisoformat(original)
            data["when"] = {"all_day": True, "start": original, "end": (day + timedelta(days=1)).isoformat()}
    data["event_status"] = "cancelled"
    return data
