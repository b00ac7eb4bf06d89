"""The calendar tables, as versioned migrations the tool applies itself.

Everything lives in the ``calendar`` schema so the app's own tables (an LMS
``public.events`` is a content table that content sync copies dev → prod)
are never touched. Migrations are idempotent: each version is applied once,
recorded with a checksum in ``calendar.schema_migrations``, and applying is
serialised by a transaction-level advisory lock so two processes starting at
once do not race on the catalog.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import errors

from safesync.shared.errors import DatabaseError, JobFailed
from safesync.shared.log import redact

SCHEMA = "calendar"

# (version, name, sql). Never edit an applied migration: add a new one.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "events",
        """
        create table calendar.events (
            id                  uuid primary key default gen_random_uuid(),
            calendar_id         text not null,
            google_event_id     text,
            google_ical_uid     text,
            recurring_event_id  text,
            original_start      text,
            title               text not null default '',
            description         text,
            location            text,
            all_day             boolean not null default false,
            start_at            timestamptz,
            end_at              timestamptz,
            start_date          date,
            end_date            date,
            time_zone           text,
            recurrence          text[],
            event_status        text not null default 'confirmed'
                                check (event_status in ('confirmed', 'tentative', 'cancelled')),
            attendees           jsonb not null default '[]'::jsonb,
            meeting_id          text,
            conference_data     bytea,
            etag                text,
            sequence            integer,
            last_sync_at        timestamptz,
            source_created_at   timestamptz,
            source_updated_at   timestamptz,
            source              text not null default 'manual'
                                check (source in ('google_calendar', 'ical', 'manual')),
            sync_status         text not null default 'local_only'
                                check (sync_status in ('synced', 'pending_sync', 'sync_failed', 'local_only')),
            sync_error          text,
            sync_retries        integer not null default 0,
            synced_hash         text,
            synced_field_hashes jsonb,
            deleted             boolean not null default false,
            deleted_at          timestamptz,
            local_updated_at    timestamptz not null default clock_timestamp(),
            created_at          timestamptz not null default now(),
            updated_at          timestamptz not null default now(),
            constraint events_google_event_key unique (calendar_id, google_event_id),
            -- all-day events are dates with an exclusive end, never midnight datetimes
            constraint events_time_shape check (
                (all_day and start_date is not null and end_date is not null and end_date > start_date
                     and start_at is null and end_at is null)
                or (not all_day and start_at is not null and end_at is not null and end_at >= start_at
                     and start_date is null and end_date is null)),
            constraint events_instance_shape check ((recurring_event_id is null) = (original_start is null))
        );
        create index events_ical_uid_idx on calendar.events (google_ical_uid);
        create index events_sync_status_idx on calendar.events (sync_status);
        create index events_last_sync_at_idx on calendar.events (last_sync_at);
        create index events_source_updated_at_idx on calendar.events (source_updated_at);
        create index events_instance_idx on calendar.events (calendar_id, recurring_event_id, original_start);
        create index events_window_idx on calendar.events (calendar_id, start_at, end_at);
        create index events_window_date_idx on calendar.events (calendar_id, start_date, end_date);

        -- An app edit of a synced row marks it for push; the sync itself sets
        -- safesync.sync_writer so its own writes do not.
        create function calendar.mark_local_edit() returns trigger language plpgsql as $$
        begin
            if coalesce(current_setting('safesync.sync_writer', true), '') = 'on' then
                return new;
            end if;
            if (new.title, new.description, new.location, new.all_day, new.start_at, new.end_at,
                new.start_date, new.end_date, new.time_zone, new.recurrence, new.event_status,
                new.attendees, new.conference_data, new.deleted)
               is distinct from
               (old.title, old.description, old.location, old.all_day, old.start_at, old.end_at,
                old.start_date, old.end_date, old.time_zone, old.recurrence, old.event_status,
                old.attendees, old.conference_data, old.deleted) then
                new.local_updated_at := clock_timestamp();
                new.updated_at := now();
                if new.sync_status in ('synced', 'sync_failed') and old.sync_status = new.sync_status then
                    new.sync_status := 'pending_sync';
                    new.sync_retries := 0;
                end if;
            end if;
            return new;
        end $$;
        create trigger events_mark_local_edit before update on calendar.events
            for each row execute function calendar.mark_local_edit();
        """,
    ),
    (
        2,
        "sync state and audit log",
        """
        create table calendar.sync_state (
            calendar_id           text primary key,
            sync_token            text,
            token_updated_at      timestamptz,
            notify_pending_since  timestamptz,
            updated_at            timestamptz not null default now()
        );
        create table calendar.sync_runs (
            calendar_id          text not null,
            mode                 text not null,
            last_attempt_at      timestamptz,
            last_success_at      timestamptz,
            last_status          text,
            last_error           text,
            last_run_id          text,
            last_counts          jsonb,
            consecutive_failures integer not null default 0,
            primary key (calendar_id, mode)
        );
        create table calendar.audit_log (
            id           bigint generated always as identity primary key,
            at           timestamptz not null default clock_timestamp(),
            run_id       text,
            calendar_id  text,
            event_id     uuid,
            google_event_id text,
            kind         text not null check (kind in ('attempt', 'error', 'state', 'conflict', 'run')),
            action       text not null,
            detail       jsonb not null default '{}'::jsonb
        );
        create index audit_log_kind_at_idx on calendar.audit_log (kind, at);
        create index audit_log_run_idx on calendar.audit_log (run_id);
        """,
    ),
    (
        3,
        "push channels and rate limits",
        """
        create table calendar.channels (
            id            text primary key,
            calendar_id   text not null,
            resource_id   text,
            token_sha256  text not null,
            address       text not null,
            expiration    timestamptz,
            created_at    timestamptz not null default now(),
            stopped_at    timestamptz
        );
        create index channels_calendar_idx on calendar.channels (calendar_id) where stopped_at is null;
        create table calendar.rate_limits (
            identity      text not null,
            window_start  timestamptz not null,
            hits          integer not null,
            primary key (identity, window_start)
        );
        """,
    ),
    (
        4,
        "notifications recorded once, syncs queued",
        """
        -- One row per Google message (a retried message is a duplicate).
        create table calendar.notifications (
            channel_id      text not null,
            message_number  bigint not null,
            calendar_id     text not null,
            resource_state  text not null,
            received_at     timestamptz not null default now(),
            primary key (channel_id, message_number)
        );
        create index notifications_received_idx on calendar.notifications (received_at);
        alter table calendar.sync_state
            add column notify_last_at   timestamptz,  -- newest notification
            add column notify_queued_at timestamptz;  -- a sync was queued for them (QStash)
        """,
    ),
    (
        5,
        "end time zone, calendar time zone",
        """
        -- Set only when the end has its own zone (a flight Berlin → New York).
        alter table calendar.events add column end_time_zone text;
        -- The calendar's zone, from events.list: a recurring event needs one.
        alter table calendar.sync_state add column time_zone text;
        create or replace function calendar.mark_local_edit() returns trigger language plpgsql as $$
        begin
            if coalesce(current_setting('safesync.sync_writer', true), '') = 'on' then
                return new;
            end if;
            if (new.title, new.description, new.location, new.all_day, new.start_at, new.end_at,
                new.start_date, new.end_date, new.time_zone, new.end_time_zone, new.recurrence, new.event_status,
                new.attendees, new.conference_data, new.deleted)
               is distinct from
               (old.title, old.description, old.location, old.all_day, old.start_at, old.end_at,
                old.start_date, old.end_date, old.time_zone, old.end_time_zone, old.recurrence, old.event_status,
                old.attendees, old.conference_data, old.deleted) then
                new.local_updated_at := clock_timestamp();
                new.updated_at := now();
                if new.sync_status in ('synced', 'sync_failed') and old.sync_status = new.sync_status then
                    new.sync_status := 'pending_sync';
                    new.sync_retries := 0;
                end if;
            end if;
            return new;
        end $$;
        """,
    ),
    (
        6,
        "skipped Google events",
        """
        -- Google events skipped as malformed: an incremental listing never
        -- returns an unchanged event again, so each is fetched by id on every
        -- run (and named) until it reads or is gone.
        create table calendar.skipped_events (
            calendar_id      text not null,
            google_event_id  text not null,
            error            text not null,
            first_skipped_at timestamptz not null default now(),
            last_skipped_at  timestamptz not null default now(),
            primary key (calendar_id, google_event_id)
        );
        """,
    ),
]

# Tables the migrations create; after migrating, each must exist (a recorded
# migration whose table was dropped by hand is reported, not hidden).
TABLES = ("schema_migrations", *(m for _, _, sql in MIGRATIONS for m in re.findall(r"create table calendar\.(\w+)", sql)))

# The catalog errors a statement raises when the calendar schema (or part of
# it) is gone under a running process.
MISSING = (errors.UndefinedTable, errors.InvalidSchemaName, errors.UndefinedColumn, errors.UndefinedFunction)

_migrated: set[str] = set()


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()[:16]


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the missing migrations (in one transaction); returns the
    versions applied now. A changed applied migration is refused: the schema
    would no longer match the code. A role that may not create the schema, or
    a schema whose recorded tables are gone, is a readable 503."""
    try:
        applied = _apply(conn)
    except errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"calendar tables cannot be created: {redact(exc.diag.message_primary or str(exc))} "
            "(the calendar role must own the calendar schema: safesync roles sql)"
        ) from None
    missing = [t for t in TABLES if conn.execute("select to_regclass(%s) is null", [f"{SCHEMA}.{t}"]).fetchone()[0]]
    if missing:
        raise DatabaseError(
            f"calendar schema is damaged: table(s) {', '.join(f'{SCHEMA}.{t}' for t in missing)} missing although "
            f"their migrations are recorded in {SCHEMA}.schema_migrations; restore them from a backup, or drop "
            f"schema {SCHEMA} to start the calendar sync afresh (its rows and sync state are then lost)",
            {"missing": missing},
        )
    return applied


def _apply(conn: psycopg.Connection) -> list[int]:
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('safesync:calendar:schema', 0))")
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when
        # the schema exists; the least-privilege calendar role only owns it.
        if conn.execute("select to_regnamespace('calendar') is null").fetchone()[0]:
            conn.execute("create schema calendar")
        conn.execute(
            """
            create table if not exists calendar.schema_migrations (
                version integer primary key,
                name text not null,
                checksum text not null,
                applied_at timestamptz not null default now()
            )
            """
        )
        done = dict(conn.execute("select version, checksum from calendar.schema_migrations").fetchall())
        for version, name, sql in MIGRATIONS:
            if version in done:
                if done[version] != _checksum(sql):
                    raise JobFailed(
                        f"calendar migration {version} ({name}) differs from the one applied; refusing to run",
                        {"version": version},
                    )
                continue
            conn.execute(sql)
            conn.execute(
                "insert into calendar.schema_migrations (version, name, checksum) values (%s, %s, %s)",
                [version, name, _checksum(sql)],
            )
            applied_now.append(version)
    return applied_now


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def ensure_migrated(conn: psycopg.Connection, url: str) -> None:
    """``migrate`` once per process and database (cheap on every request);
    ``tables_required`` forgets it when the tables turn out to be gone."""
    key = _key(url)
    if key not in _migrated:
        migrate(conn)
        _migrated.add(key)


@contextmanager
def tables_required(url: str, database: str) -> Iterator[None]:
    """Calendar statements inside this block that find the schema gone
    (dropped under a running process, a restore of an older dump) answer 503
    with a readable error instead of a 500, and this process forgets that it
    migrated ``url``: the next call re-creates the tables, or says why not."""
    try:
        yield
    except MISSING as exc:
        _migrated.discard(_key(url))
        raise DatabaseError(
            f"calendar tables in database {database!r} are missing or incomplete "
            f"({redact(exc.diag.message_primary or type(exc).__name__)}); the next call re-creates them",
            {"database": database},
        ) from None


def installed(conn: psycopg.Connection) -> bool:
    """Whether the calendar tables exist (status never creates them)."""
    row = conn.execute("select to_regclass('calendar.schema_migrations') is not null").fetchone()
    if not row[0]:
        return False
    latest = conn.execute("select coalesce(max(version), 0) from calendar.schema_migrations").fetchone()[0]
    return latest >= MIGRATIONS[-1][0]
