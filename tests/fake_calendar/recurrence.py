"""Just enough RRULE for the fake: FREQ=DAILY|WEEKLY with INTERVAL, COUNT,
UNTIL and (weekly) BYDAY, plus EXDATE — expanded in the event's own time
zone, so wall-clock times survive DST like Google's do."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Iterator
from zoneinfo import ZoneInfo

DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
HORIZON = 5000


def _rule(lines: list[str]) -> tuple[dict[str, str], set[str]]:
    rule: dict[str, str] = {}
    exdates: set[str] = set()
    for line in lines:
        if line.startswith("RRULE:"):
            rule = dict(part.split("=", 1) for part in line[6:].split(";") if "=" in part)
        elif line.startswith("EXDATE"):
            exdates.update(v.strip() for v in line.split(":", 1)[1].split(","))
    return rule, exdates


def _parse_until(text: str) -> datetime:
    if "T" in text:
        return datetime.strptime(text.rstrip("Z"), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return datetime.strptime(text, "%Y%m%d").replace(tzinfo=timezone.utc) + timedelta(days=1)


def occurrences(event: dict, until: datetime) -> Iterator[tuple[str, dict, dict]]:
    """(original start key, start, end) of each occurrence starting before
    ``until``: keys are ``YYYY-MM-DD`` (all-day) or UTC ``...Z`` instants."""
    rule, exdates = _rule(event.get("recurrence") or [])
    freq = rule.get("FREQ", "DAILY")
    step = int(rule.get("INTERVAL", "1"))
    count = int(rule["COUNT"]) if "COUNT" in rule else None
    stop = min(until, _parse_until(rule["UNTIL"])) if "UNTIL" in rule else until
    byday = [DAYS.index(d[-2:]) for d in rule.get("BYDAY", "").split(",") if d] if freq == "WEEKLY" else []
    all_day = "date" in event["start"]
    if all_day:
        first = date.fromisoformat(event["start"]["date"])
        length = date.fromisoformat(event["end"]["date"]) - first
    else:
        zone = ZoneInfo(event["start"].get("timeZone") or "UTC")
        def parse(text: str) -> datetime:  # no offset: wall time in the event's zone
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=zone)

        first_dt = parse(event["start"]["dateTime"]).astimezone(zone)
        length = parse(event["end"]["dateTime"]) - first_dt
        first = first_dt.date()
    produced = 0
    for n in range(HORIZON):
        if freq == "DAILY":
            days = [first + timedelta(days=n * step)]
        else:
            week_start = first - timedelta(days=first.weekday()) + timedelta(weeks=n * step)
            days = sorted(week_start + timedelta(days=d) for d in (byday or [first.weekday()]))
            days = [d for d in days if d >= first]
        for day in days:
            if all_day:
                start_at = datetime.combine(day, datetime.min.time(), timezone.utc)
                key, start, end = day.isoformat(), {"date": day.isoformat()}, {"date": (day + length).isoformat()}
                ex_key = day.strftime("%Y%m%d")
            else:
                local = datetime.combine(day, first_dt.timetz().replace(tzinfo=None)).replace(tzinfo=zone)
                start_at = local.astimezone(timezone.utc)
                key = start_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                tz = event["start"].get("timeZone")
                start = {"dateTime": local.isoformat(), **({"timeZone": tz} if tz else {})}
                end = {"dateTime": (local + length).isoformat(), **({"timeZone": tz} if tz else {})}
                ex_key = start_at.strftime("%Y%m%dT%H%M%SZ")
            if start_at >= stop or (count is not None and produced >= count):
                return
            produced += 1
            if ex_key in exdates:
                continue
            yield key, start, end
