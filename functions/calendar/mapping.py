"""Google event JSON ↔ canonical event data ↔ ``calendar.events`` row.

The canonical form is what hashes and three-way merges compare: a dict of the
synced fields with normalised values (instants in UTC, attendees sorted,
absent and empty the same). All-day events are dates with Google's exclusive
end date, never midnight datetimes, so no time zone can shift them.

``time_zone`` is the start's zone, or ``[start, end]`` when the end has a
zone of its own (Google keeps them apart: a flight Berlin → New York); the
row keeps the end's in ``end_time_zone`` only then, so rows whose zones
agree hash exactly as before it existed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .crypto import Cipher, UnreadableConference

# The fields two-way sync owns. "when" is all_day/start/end together: they
# only make sense as one value (a merge never mixes a date start with a
# datetime end).
FIELDS = ("title", "description", "location", "when", "time_zone", "attendees", "recurrence", "event_status", "conference")

EventData = dict[str, Any]

def new_event_id() -> str:
    """A Google-valid event id chosen by us, so a retried insert is
    recognisable (409 = already done). Hex digits are a subset of the
    base32hex alphabet Google requires (SQL: replace(gen_random_uuid()::text, '-', ''))."""
    return uuid.uuid4().hex


def utc_text(value: str | datetime) -> str:
    """An RFC 3339 instant normalised to ``YYYY-MM-DDTHH:MM:SSZ``."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def original_start(ev: dict[str, Any]) -> str | None:
    """An instance's original start as rows keep it (a date, or a UTC
    instant); ``InvalidEventData`` when Google's is not of its documented
    shape (an object with a date or a dateTime)."""
    original = _typed(ev.get("originalStartTime"), dict, "originalStartTime")
    if not original:
        return None
    kind = "date" if original.get("date") is not None else "dateTime"
    text = _typed(original.get(kind), str, f"originalStartTime.{kind}")
    if text is None:
        raise InvalidEventData("originalStartTime has neither a date nor a dateTime")
    try:
        return date.fromisoformat(text).isoformat() if kind == "date" else utc_text(text)
    except ValueError:
        raise InvalidEventData(f"originalStartTime.{kind} is not {'an ISO date' if kind == 'date' else 'an RFC 3339 instant'}") from None


def zone_value(start: str | None, end: str | None) -> str | list[str | None] | None:
    """The canonical ``time_zone``: one zone, or both when they differ."""
    return start if end in (None, start) else [start, end]


def zones(data: EventData) -> tuple[str | None, str | None]:
    """(start zone, end zone) of canonical data; the end defaults to the start."""
    value = data["time_zone"]
    if isinstance(value, list):
        return value[0], value[1]
    return value, value


class InvalidEventData(ValueError):
    """A row whose content no event can have (the app wrote ``attendees``
    that is not a list of objects with string emails). It fails that row
    with this message; it must never stop the sync of the other rows."""


def _attendees(items: Any, *, lenient: bool = False, strict: bool = False) -> list[dict[str, Any]]:
    """Canonical attendees; a malformed list raises ``InvalidEventData``
    (or, ``lenient``, loses only its malformed entries: for rows whose
    content no longer matters, e.g. one being deleted). ``strict`` (a row's
    content about to be compared or pushed) also refuses an entry without an
    email; from Google such an entry is left out as before."""
    if items is not None and not isinstance(items, list):
        if lenient:
            return []
        raise InvalidEventData(f"attendees must be a JSON array of objects, not {type(items).__name__}")
    out = []
    for a in items or []:
        if not isinstance(a, dict) or not isinstance(a.get("email"), (str, type(None))):
            if lenient:
                continue
            raise InvalidEventData("attendees: each entry must be an object whose email is a string")
        if not a.get("email"):
            if strict:  # Google requires an email: dropping it here would erase the app's entry, unreported
                raise InvalidEventData("attendees: an entry has no email (Google requires one for every attendee)")
            continue
        entry: dict[str, Any] = {"email": a["email"].strip().lower(), "responseStatus": a.get("responseStatus") or "needsAction"}
        if a.get("displayName"):
            entry["displayName"] = a["displayName"]
        if a.get("optional"):
            entry["optional"] = True
        out.append(entry)
    return sorted(out, key=lambda e: e["email"])


def _blank(value: str | None) -> str | None:
    return value if value else None


def _typed(value: Any, kind: type, name: str) -> Any:
    """``value`` if it is None or a ``kind``; else ``InvalidEventData`` naming
    the field and the type found (never the value: it may be a meeting's
    credentials)."""
    if value is not None and not isinstance(value, kind):
        raise InvalidEventData(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _instant_field(ev: dict[str, Any], name: str) -> datetime | None:
    """A server-set RFC 3339 field (``created``, ``updated``), checked like
    the others: a bad one is ``InvalidEventData``, never a crash."""
    text = _typed(ev.get(name), str, name)
    if not text:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        raise InvalidEventData(f"{name} is not an RFC 3339 instant") from None


def _google_when(ev: dict[str, Any]) -> dict[str, Any] | None:
    """``when`` of a Google event: both ends dates, or both instants."""
    start = _typed(ev.get("start"), dict, "start") or {}
    end = _typed(ev.get("end"), dict, "end") or {}
    if not start and not end:
        if ev.get("status") == "cancelled":
            return None  # a cancelled event may carry only its id and status
        raise InvalidEventData("start and end are missing")
    kind = "date" if start.get("date") is not None else "dateTime"  # a null sub-field is no field
    texts = [_typed(side.get(kind), str, f"{name}.{kind}") for name, side in (("start", start), ("end", end))]
    if None in texts:
        raise InvalidEventData(f"start and end must both have a {kind}")
    try:
        if kind == "date":
            return {"all_day": True, "start": date.fromisoformat(texts[0]).isoformat(), "end": date.fromisoformat(texts[1]).isoformat()}
        return {"all_day": False, "start": utc_text(texts[0]), "end": utc_text(texts[1])}
    except ValueError:
        raise InvalidEventData(f"start/end {kind} is not {'an ISO date' if kind == 'date' else 'an RFC 3339 instant'}") from None


def from_google(ev: dict[str, Any]) -> EventData:
    """Canonical data of a Google event (a cancelled event may lack times).
    A field of another type than the API reference gives raises
    ``InvalidEventData``: that event is skipped and named, the others sync
    (before, one such event crashed the whole run, or was stored mangled:
    a recurrence string became a list of its characters)."""
    start, end = ev.get("start") or {}, ev.get("end") or {}
    when = _google_when(ev)
    recurrence = _typed(ev.get("recurrence"), list, "recurrence")
    if recurrence and not all(isinstance(line, str) for line in recurrence):
        raise InvalidEventData("recurrence must be a list of strings")
    conference = _typed(ev.get("conferenceData"), dict, "conferenceData")
    _typed((conference or {}).get("conferenceId"), str, "conferenceData.conferenceId")
    return {
        "title": _typed(ev.get("summary"), str, "summary") or "",
        "description": _blank(_typed(ev.get("description"), str, "description")),
        "location": _blank(_typed(ev.get("location"), str, "location")),
        "when": when,
        "time_zone": zone_value(_blank(_typed(start.get("timeZone"), str, "start.timeZone")),
                                _blank(_typed(end.get("timeZone"), str, "end.timeZone"))),
        "attendees": _attendees(ev.get("attendees")),
        "recurrence": list(recurrence) if recurrence else None,
        "event_status": _typed(ev.get("status"), str, "status") or "confirmed",
        "conference": conference or None,
    }


def _zone(name: str | None) -> ZoneInfo | timezone:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.utc


def to_google(data: EventData, *, exception: bool = False, calendar_zone: str | None = None) -> dict[str, Any]:
    """The body to send for an insert or patch. Nulls clear a field (patch
    semantics). An instance (exception) carries no recurrence of its own.
    A timed series needs a start zone (Google: "for recurring events this
    field is required"): the row's, else ``calendar_zone``. Start and end
    each keep their own zone."""
    body: dict[str, Any] = {
        "summary": data["title"],
        "description": data["description"],
        "location": data["location"],
        "status": data["event_status"],
        "attendees": data["attendees"],
    }
    when = data["when"]
    start_tz, end_tz = zones(data)
    if when and not when["all_day"] and data["recurrence"] and not exception and not start_tz:
        start_tz = end_tz = end_tz or calendar_zone
    # start/end name every sub-field, null for those the event does not
    # have: a patch merges nested objects into Google's (null deletes), so
    # a left-out "date" or "dateTime" would survive an all-day ↔ timed switch.
    if when and when["all_day"]:
        body["start"] = {"date": when["start"], "dateTime": None, "timeZone": start_tz}
        body["end"] = {"date": when["end"], "dateTime": None, "timeZone": end_tz}
    elif when:
        body["start"] = {"date": None, "dateTime": parse_instant(when["start"]).astimezone(_zone(start_tz)).isoformat(), "timeZone": start_tz}
        body["end"] = {"date": None, "dateTime": parse_instant(when["end"]).astimezone(_zone(end_tz)).isoformat(), "timeZone": end_tz}
    if not exception:
        body["recurrence"] = data["recurrence"]
    # Always sent, like the other fields: a null removes a meeting the app
    # removed (left out, Google kept it and the sync wrote it back as synced).
    body["conferenceData"] = data["conference"]
    return body


def _conference(row: dict[str, Any], cipher: Cipher, lenient: bool) -> dict[str, Any] | None:
    """The row's conference data; one that does not decrypt fails that row
    (``lenient``: none), as a malformed attendee list does."""
    try:
        return cipher.decrypt(row["conference_data"])
    except UnreadableConference as exc:
        if lenient:
            return None
        raise InvalidEventData(exc.message) from None


def from_row(row: dict[str, Any], cipher: Cipher, *, lenient: bool = False) -> EventData:
    """Canonical data of a row; ``InvalidEventData`` if the app wrote a
    malformed one or its conference data does not decrypt (``lenient``:
    malformed attendee entries and unreadable conference data are left out)."""
    if row["all_day"]:
        when = {"all_day": True, "start": row["start_date"].isoformat(), "end": row["end_date"].isoformat()}
    else:
        when = {"all_day": False, "start": utc_text(row["start_at"]), "end": utc_text(row["end_at"])}
    return {
        "title": row["title"] or "",
        "description": _blank(row["description"]),
        "location": _blank(row["location"]),
        "when": when,
        "time_zone": zone_value(_blank(row["time_zone"]), _blank(row["end_time_zone"])),
        "attendees": _attendees(row["attendees"], lenient=lenient, strict=not lenient),
        "recurrence": list(row["recurrence"]) if row["recurrence"] else None,
        "event_status": row["event_status"],
        "conference": _conference(row, cipher, lenient),
    }


def row_values(data: EventData, cipher: Cipher) -> dict[str, Any]:
    """Column values for a row holding ``data`` (``when`` must be set)."""
    from psycopg.types.json import Jsonb

    when = data["when"]
    all_day = bool(when["all_day"])
    conference = data["conference"]
    start_tz, end_tz = zones(data)
    return {
        "title": data["title"],
        "description": data["description"],
        "location": data["location"],
        "all_day": all_day,
        "start_at": parse_instant(when["start"]) if not all_day else None,
        "end_at": parse_instant(when["end"]) if not all_day else None,
        "start_date": date.fromisoformat(when["start"]) if all_day else None,
        "end_date": date.fromisoformat(when["end"]) if all_day else None,
        "time_zone": start_tz,
        "end_time_zone": end_tz if end_tz != start_tz else None,
        "recurrence": data["recurrence"],
        "event_status": data["event_status"],
        "attendees": Jsonb(data["attendees"]),
        "meeting_id": (conference or {}).get("conferenceId"),
        "conference_data": cipher.encrypt(conference),
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def field_hashes(data: EventData) -> dict[str, str]:
    return {f: hashlib.sha256(_canonical(data[f]).encode()).hexdigest()[:24] for f in FIELDS}


def content_hash(hashes: dict[str, str]) -> str:
    return hashlib.sha256(_canonical([hashes[f] for f in FIELDS]).encode()).hexdigest()[:32]


def data_hash(data: EventData) -> str:
    return content_hash(field_hashes(data))


def span(data: EventData) -> tuple[datetime, datetime] | None:
    """The UTC interval an event may cover. All-day dates are widened by 14 h
    each side (the furthest offsets from UTC) so no zone's day is missed; a
    series is open-ended."""
    when = data.get("when")
    if not when:
        return None
    if when["all_day"]:
        start = datetime.combine(date.fromisoformat(when["start"]), datetime.min.time(), timezone.utc) - timedelta(hours=14)
        end = datetime.combine(date.fromisoformat(when["end"]), datetime.min.time(), timezone.utc) + timedelta(hours=14)
    else:
        start, end = parse_instant(when["start"]), parse_instant(when["end"])
    if data.get("recurrence"):
        end = datetime.max.replace(tzinfo=timezone.utc)
    return start, end


def overlaps(data: EventData, window: tuple[datetime, datetime]) -> bool:
    s = span(data)
    return s is not None and s[0] < window[1] and s[1] > window[0]


def google_meta(ev: dict[str, Any]) -> dict[str, Any]:
    """The Google bookkeeping columns of a row from an event resource. The
    fields Google sets are checked as from_google checks the content: one of
    another type than the reference gives is ``InvalidEventData``."""
    sequence = ev.get("sequence")
    if isinstance(sequence, bool):  # a bool is an int to isinstance, never to the API
        raise InvalidEventData("sequence must be a int, not bool")
    return {
        "google_event_id": ev["id"],
        "google_ical_uid": _typed(ev.get("iCalUID"), str, "iCalUID"),
        "recurring_event_id": _typed(ev.get("recurringEventId"), str, "recurringEventId"),
        "original_start": original_start(ev),
        "etag": _typed(ev.get("etag"), str, "etag"),
        "sequence": _typed(sequence, int, "sequence"),
        "source_created_at": _instant_field(ev, "created"),
        "source_updated_at": _instant_field(ev, "updated"),
    }
