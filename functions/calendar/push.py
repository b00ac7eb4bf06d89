"""Postgres → Google: rows in ``pending_sync`` become inserts, patches and
deletes, sent in batches of 50.

- Insert uses our own id (assigned and stored before the first attempt), so
  a retried insert answered 409 (duplicate) is recognisable: the event is
  fetched, and if it carries the row's id (a private extended property every
  insert sets) it is ours and is merged like after a 412; another event
  holding the id is never overwritten (the row fails ``idCollision``).
- Patch carries ``If-Match: <etag>``; 412 means Google changed meanwhile: the
  event is fetched and merged three-way (conflicts.py), then patched again
  with the new etag when the merge differs from Google.
- Delete: 404/410 mean already gone. A cancelled or deleted occurrence of a
  series is a DELETE of the instance id (Google keeps a cancelled exception).
- Occurrence changes go after their series, in a second phase; an occurrence
  whose series is not on Google yet waits for the next run. An occurrence
  made in the app gets its id from ``events.instances`` (ids are opaque,
  never built from the series id and a time) and is merged three-way with
  that instance (base: the occurrence as the held series defines it), so
  edits made to it on Google survive; a series with no occurrence at that
  original start is a failure of that row, never a deletion.
- A timed series without a zone is sent in the calendar's zone (Google
  refuses a recurring event without one), learnt from events.list.
- Retryable failures are retried in later rounds with backoff; a row whose
  push fails in ``max_retries`` runs ends ``sync_failed`` with the reason.
- The result (etag, sequence, updated, Google's normalised content) is
  written back only if the app did not edit the row meanwhile; otherwise
  only the new etag/base is kept and the row stays pending.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from safesync.shared.errors import JobFailed

from . import state
from .batch import BatchRunner
from .conflicts import merge
from .context import SyncContext
from .mapping import (
    EventData, InvalidEventData, content_hash, field_hashes, from_google, from_row, new_event_id, original_start,
    parse_instant, to_google, utc_text,
)
from .retry import Failure
from .store import DELETE_SQL, UPDATE_BASE_SQL, UPDATE_MERGED_SQL, UPDATE_PUSHED_SQL, delete_exceptions, synced_values

WRITE_KINDS = ("insert", "patch", "force_patch")
# Every insert carries the row's id in this private extended property (kept
# by every later patch): after a 409 it tells our own landed insert from
# another event that holds the id.
ROW_MARKER = "safesyncRowId"


@dataclass(frozen=True)
class Op:
    row: dict[str, Any]
    kind: str  # insert | patch | force_patch | delete | force_delete | cancel_instance | get | get_existing
    data: EventData | None
    etag: str | None = None
    tries: int = 0

    @property
    def gid(self) -> str:
        return self.row["google_event_id"]


class Pusher:
    def __init__(self, ctx: SyncContext, calendar_id: str) -> None:
        self.ctx, self.cal = ctx, calendar_id
        self.runner: BatchRunner[Op] = BatchRunner(ctx, calendar_id)
        self.unreachable: Failure | None = None
        self._calendar_zone: str | None = None

    def run(self, *, include_failed: bool = False) -> None:
        statuses = ["pending_sync", "sync_failed"] if include_failed else ["pending_sync"]
        rows = self._rows(statuses)
        if not rows:
            return
        self._assign_ids(rows)
        singles = [r for r in rows if not r["recurring_event_id"]]
        self._drive([op for op in map(self._op_for, singles) if op is not None])
        occurrences = [r for r in rows if r["recurring_event_id"]]
        if occurrences:
            unpushed = self._unpushed_series({r["recurring_event_id"] for r in occurrences})
            ready = [r for r in occurrences if r["recurring_event_id"] not in unpushed]
            self.ctx.counts["deferred"] += len(occurrences) - len(ready)
            self._drive([op for op in map(self._op_for, self._instance_ids(ready)) if op is not None])
        if self.unreachable is not None:
            # Google itself was unreachable: the rows are not at fault and keep their tries.
            raise JobFailed(f"calendar {self.cal}: push incomplete, Google unreachable or asking to wait ({self.unreachable.describe()})",
                            {"calendar_id": self.cal})

    # -- preparation --------------------------------------------------------
    def _rows(self, statuses: list[str]) -> list[dict[str, Any]]:
        with self.ctx.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select * from calendar.events where calendar_id = %s and sync_status = any(%s) order by created_at, id",
                [self.cal, statuses],
            )
            return cur.fetchall()

    def _assign_ids(self, rows: list[dict[str, Any]]) -> None:
        """Give each new event its Google id before the first attempt,
        stored, so every retry (in this run or the next) reuses it."""
        with self.ctx.conn.transaction():
            for row in rows:
                if row["google_event_id"] or row["deleted"] or row["recurring_event_id"]:
                    continue  # has one / never reached Google / an occurrence: Google names it
                gid = new_event_id()
                self.ctx.conn.execute("update calendar.events set google_event_id = %s where id = %s", [gid, row["id"]])
                row["google_event_id"] = gid

    def _instance_ids(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Occurrences Google has not confirmed yet (no etag) get the id of
        the instance at their original start, from events.instances; the
        rows ready to push are returned."""
        todo = [r for r in rows if not r["etag"] and not r["deleted"]]
        ready = [r for r in rows if r["etag"] or r["deleted"]]
        if not todo:
            return ready
        client = self.ctx.client
        results = BatchRunner(self.ctx, self.cal).run(
            [(row, lambda r=row: client.instances_request(self.cal, r["recurring_event_id"], r["original_start"])) for row in todo]
        )
        with self.ctx.conn.transaction():
            for row, response, failure in results:
                if failure is not None and self._postponed(failure):
                    self.unreachable = failure  # Google unreachable: the row keeps its tries
                    continue
                if failure is not None and failure.status not in (404, 410):
                    self._failed(row, failure)
                    continue
                found = [i for i in (response or {}).get("items", []) if original_start(i) == row["original_start"]]
                match = [i["id"] for i in found]
                if not match:
                    self._failed(row, Failure(failure.status if failure else None, "noSuchOccurrence",
                                              f"series {row['recurring_event_id']} has no occurrence starting {row['original_start']}", False))
                    continue
                holder = self.ctx.conn.execute(
                    "select id from calendar.events where calendar_id = %s and google_event_id = %s", [self.cal, match[0]]
                ).fetchone()
                if holder is not None:
                    # Another row already is this occurrence: taking its id broke the
                    # unique key and failed every run (500) — this row fails instead.
                    self._failed(row, Failure(None, "duplicateOccurrence",
                                              f"the occurrence of series {row['recurring_event_id']} starting {row['original_start']} "
                                              f"is already row {holder[0]} ({match[0]}); edit that row instead", False))
                    continue
                self.ctx.conn.execute("update calendar.events set google_event_id = %s where id = %s", [match[0], row["id"]])
                # Google's instance may already carry edits (an organiser's agenda on that
                # day) the app never saw: the row is merged with it, not patched over it.
                ready.append(dict(row, google_event_id=match[0], _instance=found[0]))
        return ready

    def _occurrence_base(self, series_id: str, instance: dict[str, Any]) -> dict[str, str] | None:
        """The merge base of an app-made occurrence: the occurrence as its
        series (the held row) defines it at the instance's original slot.
        Fields Google's instance differs in were edited on Google, fields the
        row differs in by the app; a plain force-patch used to erase the
        former without a word. None (no held series): every differing field
        counts as changed on both sides and the later edit wins."""
        with self.ctx.conn.cursor(row_factory=dict_row) as cur:
            cur.execute("select * from calendar.events where calendar_id = %s and google_event_id = %s and not deleted",
                        [self.cal, series_id])
            master_row = cur.fetchone()
        if master_row is None:
            return None
        master = from_row(master_row, self.ctx.cipher, lenient=True)
        when, original = master["when"], original_start(instance)
        if when["all_day"]:
            first = date.fromisoformat(original)
            days = date.fromisoformat(when["end"]) - date.fromisoformat(when["start"])
            slot = {"all_day": True, "start": first.isoformat(), "end": (first + days).isoformat()}
        else:
            start = parse_instant(original)
            length = parse_instant(when["end"]) - parse_instant(when["start"])
            slot = {"all_day": False, "start": utc_text(start), "end": utc_text(start + length)}
        return field_hashes(dict(master, when=slot, recurrence=None, event_status="confirmed"))

    def calendar_zone(self) -> str | None:
        """The calendar's time zone: stored from the last listing, else
        asked once (events.list carries it; calendars.get would need a wider
        scope than calendar.events)."""
        if self._calendar_zone is None:
            self._calendar_zone = state.calendar_time_zone(self.ctx.conn, self.cal)
        if self._calendar_zone is None:
            answer = self.ctx.api(self.cal, "events.list", lambda: self.ctx.client.list_events(self.cal, maxResults=1))
            self._calendar_zone = answer.get("timeZone")
            if self._calendar_zone:
                with self.ctx.conn.transaction():
                    state.store_time_zone(self.ctx.conn, self.cal, self._calendar_zone)
        return self._calendar_zone

    def _unpushed_series(self, series_ids: set[str]) -> set[str]:
        rows = self.ctx.conn.execute(
            """select google_event_id from calendar.events
                where calendar_id = %s and google_event_id = any(%s) and etag is null and not deleted""",
            [self.cal, list(series_ids)],
        ).fetchall()
        return {r[0] for r in rows}

    def _op_for(self, row: dict[str, Any]) -> Op | None:
        if row["deleted"]:
            if not row["google_event_id"]:
                with self.ctx.conn.transaction():
                    self._done(row, "never on Google")
                return None
            return Op(row, "cancel_instance" if row["recurring_event_id"] else "delete", None)
        try:
            data = from_row(row, self.ctx.cipher)
        except InvalidEventData as exc:  # this row fails; the others still go
            with self.ctx.conn.transaction():
                self._failed(row, Failure(None, "invalidRow", str(exc), False))
            return None
        if row["recurring_event_id"]:
            if data["event_status"] == "cancelled":
                return Op(row, "cancel_instance", data)
            if row.get("_instance") is not None:
                instance = row["_instance"]
                base = self._occurrence_base(row["recurring_event_id"], instance)
                try:
                    if row["conference_data"] is None:
                        # Never synced, so no conference is not a removal: the app
                        # cannot write one (encrypted at rest); it keeps the instance's.
                        data = dict(data, conference=from_google(instance)["conference"])
                    with self.ctx.conn.transaction():
                        return self._resolve(Op(dict(row, synced_field_hashes=base), "get", data), instance,
                                             "with Google's instance")
                except InvalidEventData as exc:
                    with self.ctx.conn.transaction():
                        self._malformed(row, exc)
                    return None
            return Op(row, "patch" if row["etag"] else "force_patch", data, row["etag"])
        return Op(row, "patch", data, row["etag"]) if row["etag"] else Op(row, "insert", data)

    def _body(self, op: Op) -> dict[str, Any]:
        exception = bool(op.row["recurring_event_id"])
        needs_zone = bool(op.data["recurrence"]) and not exception and op.data["when"] and not op.data["when"]["all_day"]
        return to_google(op.data, exception=exception, calendar_zone=self.calendar_zone() if needs_zone else None)

    def _request(self, op: Op):
        client = self.ctx.client
        if op.kind == "insert":
            body = {"id": op.gid, **self._body(op), "extendedProperties": {"private": {ROW_MARKER: str(op.row["id"])}}}
            return lambda: client.insert_request(self.cal, body)
        if op.kind in ("patch", "force_patch"):
            etag, body = (op.etag if op.kind == "patch" else None), self._body(op)
            return lambda: client.patch_request(self.cal, op.gid, body, etag)
        if op.kind in ("delete", "cancel_instance"):
            etag = op.row["etag"]  # a Google edit since our last sync answers 412: the deletion still wins, but is audited
            return lambda: client.delete_request(self.cal, op.gid, etag)
        if op.kind == "force_delete":
            return lambda: client.delete_request(self.cal, op.gid)
        return lambda: client.get_request(self.cal, op.gid)

    # -- the rounds ---------------------------------------------------------
    def _drive(self, ops: list[Op]) -> None:
        ctx = self.ctx
        max_rounds = ctx.policy.attempts * 4
        for round_no in range(max_rounds):
            if not ops:
                return
            results = self.runner.run_once([(op, self._request(op)) for op in ops])
            next_ops: list[Op] = []
            retried: list[Failure] = []
            with ctx.conn.transaction():
                for op, response, failure in results:
                    try:
                        follow = self._handle(op, response, failure)
                    except InvalidEventData as exc:  # Google's answer unreadable: this row fails, the others go on
                        self._malformed(op.row, exc)
                        continue
                    if follow is not None:
                        if follow.tries > op.tries and failure is not None:
                            retried.append(failure)
                        next_ops.append(follow)
            ops = next_ops
            if retried and ops and round_no < max_rounds - 1:
                ctx.counts["item_retries"] += len(retried)
                self.runner.sleep_before_retry(max(o.tries for o in ops) - 1, retried)
        with ctx.conn.transaction():
            for op in ops:
                self._failed(op.row, Failure(None, "unsettled", "still conflicting or failing after every round", False))

    def _handle(self, op: Op, response: Any, failure: Failure | None) -> Op | None:
        ctx = self.ctx
        if failure is None:
            if op.kind in WRITE_KINDS:
                self._written(op, response)
            elif op.kind == "get":
                return self._resolve(op, response)
            elif op.kind == "get_existing":
                return self._claim(op, response)
            else:
                self._done(op.row, "deleted on Google")
            return None
        status = failure.status
        if failure.retryable:
            if op.tries + 1 < ctx.policy.attempts and not ctx.policy.waits_too_long(failure):
                return replace(op, tries=op.tries + 1)
            if self._postponed(failure):
                self.unreachable = failure
                self._audit(op.row, "error", "push postponed: Google unreachable or asking to wait", {"error": failure.describe()})
            else:
                self._failed(op.row, failure)
            return None
        if op.kind == "insert" and status == 409:
            self._audit(op.row, "state", "insert answered 409: the id exists on Google, checking whose event it is", {})
            return Op(op.row, "get_existing", op.data)
        if op.kind == "patch" and status == 412:
            ctx.counts["precondition_failed"] += 1
            return Op(op.row, "get", op.data)
        if op.kind in ("delete", "cancel_instance", "force_delete") and status in (404, 410):
            self._done(op.row, f"already gone ({status})")
            return None
        if op.kind in ("delete", "cancel_instance") and status == 412:
            # Edited on Google since our last sync: a deletion beats an edit,
            # but it is a conflict and is said (it was deleted unconditionally).
            ctx.counts["conflicts"] += 1
            self._audit(op.row, "conflict", "local deletion wins over a Google edit made since the last sync", {"status": 412})
            return Op(op.row, "force_delete", None)
        if op.kind in WRITE_KINDS + ("get", "get_existing") and status in (404, 410):
            self._audit(op.row, "conflict", "remote deletion wins over local edit", {"status": status})
            ctx.counts["conflicts"] += 1
            self._deleted(op.row)
            return None
        self._failed(op.row, failure)
        return None

    def _claim(self, op: Op, remote_event: dict[str, Any]) -> Op | None:
        """After a 409 on our insert: the id is taken on Google. It is our
        own event when it carries this row's ``ROW_MARKER`` (an earlier
        attempt landed, its answer lost): then it is merged like after a 412.
        Any other event holding the id (one the app chose that another event
        has, or one deleted there long ago) is never overwritten — the row
        fails. Blindly patching it, as before, replaced that event's content
        with the row's and reported it pushed."""
        row = op.row
        marker = ((remote_event.get("extendedProperties") or {}).get("private") or {}).get(ROW_MARKER)
        if marker != str(row["id"]):
            self._failed(row, Failure(409, "idCollision", f"event id {op.gid} is already used on Google by another event; "
                                                          "it was not overwritten", False))
            return None
        return self._resolve(op, remote_event, "after 409")

    def _resolve(self, op: Op, remote_event: dict[str, Any], context: str = "after 412") -> Op | None:
        """After a 412 (or a 409 on our own insert, or for an app-made
        occurrence: ``context``): merge our pending content with Google's
        current event."""
        ctx, row = self.ctx, op.row
        if remote_event.get("status") == "cancelled" and not row["recurring_event_id"]:
            self._audit(row, "conflict", "remote deletion wins over local edit", {"etag": remote_event.get("etag")})
            ctx.counts["conflicts"] += 1
            self._deleted(row)
            return None
        remote = from_google(remote_event)
        result = merge(
            row["synced_field_hashes"], op.data, remote,
            local_time=row["local_updated_at"],
            remote_time=parse_instant(remote_event["updated"]) if remote_event.get("updated") else None,
        )
        if result.conflict and result.remote_fields:  # nothing changed on Google: no conflict, only our edit
            ctx.counts["conflicts"] += 1
            self._audit(row, "conflict", f"three-way merge {context} ({result.kind})", result.describe())
        if field_hashes(result.data) == field_hashes(remote):
            self._written(op, remote_event)
            return None
        base = synced_values(ctx, remote, remote_event)
        values = synced_values(ctx, result.data, remote_event)
        values.update(synced_hash=base["synced_hash"], synced_field_hashes=base["synced_field_hashes"], id=row["id"],
                      seen_local=row["local_updated_at"])
        # Only over the content this merge was made from: an app edit since
        # the row was read would otherwise be overwritten by the merge.
        written = ctx.conn.execute(
            UPDATE_MERGED_SQL + " and local_updated_at = %(seen_local)s returning local_updated_at", values
        ).fetchone()
        if written is None:
            # Edited again meanwhile: the row keeps the app's content, its old
            # etag and base, and stays pending; the next run meets the 412 again
            # and merges the newer edit.
            ctx.counts["edited_during_push"] += 1
            self._audit(row, "conflict", "edited in the app during the push: merge not applied, redone next run", {})
            return None
        fresh = dict(row, local_updated_at=written[0], synced_field_hashes=base["synced_field_hashes"].obj)
        return Op(fresh, "patch", result.data, remote_event.get("etag"))

    # -- outcomes -----------------------------------------------------------
    def _written(self, op: Op, event: dict[str, Any]) -> None:
        ctx, row = self.ctx, op.row
        data = from_google(event)
        values = {**synced_values(ctx, data, event), "id": row["id"], "seen_local": row["local_updated_at"]}
        if ctx.conn.execute(UPDATE_PUSHED_SQL, values).rowcount == 0:
            ctx.conn.execute(UPDATE_BASE_SQL, values)  # edited again meanwhile: stays pending
            ctx.counts["edited_during_push"] += 1
        ctx.counts["pushed"] += 1
        ctx.touched(self.cal, data, op.data)
        self._audit(row, "state", f"pushed ({op.kind})", {"etag": event.get("etag")})

    def _done(self, row: dict[str, Any], why: str) -> None:
        ctx = self.ctx
        data = from_row(row, ctx.cipher, lenient=True)  # a deleted row: its content no longer matters
        hashes = field_hashes(data)
        ctx.conn.execute(
            """update calendar.events set sync_status = 'synced', sync_error = null, sync_retries = 0, last_sync_at = now(),
                      synced_field_hashes = %s, synced_hash = %s, etag = null, updated_at = now()
                where id = %s""",
            [Jsonb(hashes), content_hash(hashes), row["id"]],
        )
        ctx.counts["pushed"] += 1
        ctx.touched(self.cal, data)
        self._audit(row, "state", why, {})

    def _deleted(self, row: dict[str, Any]) -> None:
        ctx = self.ctx
        ctx.conn.execute(DELETE_SQL, {"id": row["id"], "etag": None})
        if not row["recurring_event_id"] and row["google_event_id"]:
            _, lost = delete_exceptions(ctx.conn, self.cal, row["google_event_id"])
            for row_id, google_id in lost:
                ctx.counts["conflicts"] += 1
                state.audit(ctx.conn, ctx.run_id, "conflict", "remote deletion of the series wins over a local change to its occurrence",
                            calendar_id=self.cal, event_id=row_id, google_event_id=google_id,
                            detail={"series": row["google_event_id"], "lost_local_edit": True})
        ctx.counts["deleted"] += 1
        ctx.touched(self.cal, from_row(row, ctx.cipher, lenient=True))

    def _failed(self, row: dict[str, Any], failure: Failure) -> None:
        ctx = self.ctx
        status = ctx.conn.execute(
            """update calendar.events
                  set sync_retries = sync_retries + 1, sync_error = %(error)s, updated_at = now(),
                      sync_status = case when sync_retries + 1 >= %(max)s then 'sync_failed' else sync_status end
                where id = %(id)s returning sync_status""",
            {"error": failure.describe(), "max": ctx.cfg.max_retries, "id": row["id"]},
        ).fetchone()[0]
        ctx.counts["push_failed"] += 1
        self._audit(row, "error", f"push failed ({status})", {"error": failure.describe(), "status": failure.status, "reason": failure.reason})

    def _postponed(self, failure: Failure) -> bool:
        """Google itself is not taking calls (unreachable, or asking for a
        longer wait than the backoff allows): the row is not at fault and
        keeps its tries."""
        return failure.retryable and (failure.whole_batch or self.ctx.policy.waits_too_long(failure))

    def _malformed(self, row: dict[str, Any], exc: InvalidEventData) -> None:
        """Google answered with an event we cannot read: the row fails with
        the reason (never overwritten from it), the others go on."""
        self._failed(row, Failure(None, "malformedRemote", f"Google's event is malformed ({exc})", False))

    def _audit(self, row: dict[str, Any], kind: str, action: str, detail: dict[str, Any]) -> None:
        state.audit(self.ctx.conn, self.ctx.run_id, kind, action, calendar_id=self.cal, event_id=row["id"],
                    google_event_id=row["google_event_id"], detail=detail)
