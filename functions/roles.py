"""``safesync roles sql``: least-privilege database roles, generated from the config.

Each deployed job connects with its own role, so a bug (or a stolen URL) in
one job cannot do what that job never needs:

- ``safesync_content_sync``: on the sync target, INSERT/UPDATE (and DELETE
  only with ``delete_missing``) on the content tables and their sequences,
  no write on any other table; it reads everything there (the safety backup
  before each sync is a complete pg_dump; deletes are checked against the
  protected rows referencing them). On the sync source, SELECT on the
  content tables only;
- ``safesync_backup``: read-only everywhere (``pg_read_all_data`` on 14+,
  BYPASSRLS so pg_dump never dumps a policy-filtered subset), plus CREATEDB
  for the restore drill's scratch database; also the role for ``validate``;
- ``safesync_calendar``: owns the ``calendar`` schema its migrations create,
  nothing else.

Every job role may use the ``safesync`` bookkeeping schema (the runner's
``safesync.deliveries``); the content-sync role may create its ledger there.

The script is idempotent and transactional: it first revokes every table
and sequence privilege the roles hold outside their own schemas, grants
exactly what the config needs, then *proves* it — a final check raises (and
rolls everything back) if the content-sync role could write any
non-content table or the backup role could write anything, whatever the
route (PUBLIC grants, column grants, role memberships, inherited or by
``SET ROLE``), or could grant itself that (SUPERUSER, CREATEROLE); a
SECURITY DEFINER routine the role may call whose owner could write such a
table is a WARNING naming it (no grant of the role bounds it). Passwords are never in it: roles
are created ``PASSWORD NULL`` and get one with psql's ``\\password``.

Grants are a second line of defence: foreign-key cascades and triggers run
as the table owner, so content sync also proves per transaction that it
wrote no protected table.
"""

from __future__ import annotations

import argparse
from typing import Iterable

from psycopg import sql

from safesync.shared.config import Settings
from safesync.shared.db import TableRef, definer_routes_sql, may_write, user_schema
from safesync.shared.errors import ConfigError
from safesync.shared.locks import SCHEMA_SQL
from safesync.shared.runner import Answer

CONTENT_ROLE = "safesync_content_sync"
BACKUP_ROLE = "safesync_backup"
CALENDAR_ROLE = "safesync_calendar"
CALENDAR_SCHEMA = "calendar"
BOOKKEEPING_SCHEMA = "safesync"

_TAG = "$roles$"


def _ident(*parts: str) -> str:
    return sql.Identifier(*parts).as_string(None)


def _lit(text: str) -> str:
    return sql.Literal(text).as_string(None)


def _do(body: str) -> str:
    if _TAG in body:  # a table name carrying our dollar-quote tag
        raise ConfigError("a table name contains '$roles$'; cannot generate the roles script")
    return f"DO {_TAG}\n{body.strip()}\n{_TAG};"


def _create_role(role: str, comment: str) -> str:
    return _do(
        f"""
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_lit(role)}) THEN
    CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD NULL;
  END IF;
END
"""
    ) + f"\nCOMMENT ON ROLE {role} IS {_lit(comment)};"


def _revoke_everywhere(role: str) -> str:
    """Forget every table/sequence grant the role holds (outside its own and
    the bookkeeping schema), so re-running after a config change removes
    privileges on tables that are no longer content."""
    return _do(
        f"""
DECLARE s text;
BEGIN
  FOR s IN SELECT n.nspname FROM pg_namespace n
           WHERE {user_schema(ours=True)} AND n.nspname NOT IN ({_lit(BOOKKEEPING_SCHEMA)}, {_lit(CALENDAR_SCHEMA)})
  LOOP
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM {role}', s);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM {role}', s);
  END LOOP;
END
"""
    )


def _owned_sequences_grant(tables: Iterable[TableRef], role: str) -> str:
    """USAGE/SELECT/UPDATE on the serial and identity sequences of ``tables``
    (found in the catalog at run time: their names are not in the config)."""
    array = "ARRAY[" + ", ".join(_lit(_ident(t.schema, t.name)) for t in tables) + "]::text[]"
    return _do(
        f"""
DECLARE seq regclass;
BEGIN
  FOR seq IN SELECT d.objid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'S'
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
               AND d.refobjid IN (SELECT t::regclass FROM unnest({array}) AS t)
  LOOP
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE %s TO {role}', seq);
  END LOOP;
END
"""
    )


def _prove(role: str, allowed: Iterable[TableRef], what: str) -> str:
    """Raise (rolling the script back) if ``role`` — or any role it may
    become (``SET ROLE`` needs no inherited membership) — could write
    (``may_write``, as doctor counts it: column grants, TRIGGER, ownership)
    any table other than ``allowed`` and the bookkeeping/calendar schemas,
    or could give itself that (SUPERUSER, CREATEROLE: the script creates
    roles without them, but only when missing). A SECURITY DEFINER
    routine the role may call whose owner could write such a table
    (``definer_routes_sql``) is a WARNING: no grant of the role bounds it,
    and revoking PUBLIC's EXECUTE could break the application."""
    array = "ARRAY[" + ", ".join(_lit(_ident(t.schema, t.name)) for t in allowed) + "]::text[]"
    counted = (f"cn.nspname NOT IN ({_lit(BOOKKEEPING_SCHEMA)}, {_lit(CALENDAR_SCHEMA)})"
               f" AND c.oid NOT IN (SELECT t::regclass FROM unnest({array}) AS t)")
    return _do(
        f"""
DECLARE bad text;
BEGIN
  SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ' ORDER BY n.nspname, c.relname) INTO bad
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'f') AND {user_schema(ours=True)}
    AND n.nspname NOT IN ({_lit(BOOKKEEPING_SCHEMA)}, {_lit(CALENDAR_SCHEMA)})
    AND c.oid NOT IN (SELECT t::regclass FROM unnest({array}) AS t)
    AND {may_write(_lit(role))};
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION '{role} could still write {what}: % (a PUBLIC grant, a column grant or a role membership?)', bad;
  END IF;
  SELECT string_agg(CASE WHEN r.rolname = {_lit(role)} THEN '' ELSE format('as %s: ', r.rolname) END
                    || concat_ws(' and ', CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END),
                    ', ' ORDER BY r.rolname) INTO bad
  FROM pg_roles r
  WHERE pg_has_role({_lit(role)}, r.oid, 'MEMBER') AND (r.rolsuper OR r.rolcreaterole);
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION '{role} could give itself any privilege: % (ALTER ROLE … NOSUPERUSER NOCREATEROLE, or revoke the membership)', bad;
  END IF;
  SELECT string_agg(r.routine || ' (owner ' || r.owner || ')', ', ') INTO bad
  FROM ({definer_routes_sql(_lit(role), counted)}) AS r(routine, owner);
  IF bad IS NOT NULL THEN
    RAISE WARNING '{role} could still write {what} through SECURITY DEFINER routines, which run with their owner''s rights whatever its grants: %', bad
      USING HINT = 'REVOKE EXECUTE on them FROM PUBLIC and the role (if the application needs them, GRANT it to the application''s roles), or mark them STABLE if they only read.';
  END IF;
END
"""
    )


def _read_all(role: str) -> list[str]:
    """Read every table (a complete pg_dump), write nothing by this grant."""
    return [
        _do(
            f"""
DECLARE s text;
BEGIN
  IF current_setting('server_version_num')::int >= 140000 THEN
    BEGIN
      GRANT pg_read_all_data TO {role};
      RETURN;
    EXCEPTION WHEN insufficient_privilege THEN  -- 16+: only with ADMIN on it (a hosted admin, e.g. Supabase's postgres, lacks it)
      RAISE NOTICE 'safesync roles: % cannot grant pg_read_all_data (%): SELECT granted on the schemas and tables that exist now instead; re-run the script after adding any', current_user, SQLERRM;
    END;
  END IF;
  -- SELECT on what exists now (re-run after adding schemas or tables)
  FOR s IN SELECT n.nspname FROM pg_namespace n WHERE {user_schema(ours=True)} LOOP
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', s);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO {role}', s);
    EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO {role}', s);
  END LOOP;
END
"""
        ),
        "-- pg_dump refuses tables with row-level security unless the role bypasses it",
        "-- (a policy-filtered dump would silently miss rows). Needs a superuser (or, on 16+,",
        "-- a CREATEROLE role that has BYPASSRLS itself); elsewhere the script stops here, saying so.",
        _do(
            f"""
BEGIN
  ALTER ROLE {role} BYPASSRLS;  -- tried, not predicted: a hosted platform may allow more than stock rules say
EXCEPTION WHEN insufficient_privilege THEN
  RAISE EXCEPTION 'safesync roles: % cannot give {role} BYPASSRLS on this server (%), nothing was changed', current_user, SQLERRM
    USING DETAIL = 'Before PostgreSQL 16 only a superuser may grant BYPASSRLS; from 16 a CREATEROLE role that has BYPASSRLS itself may.',
          HINT = 'Run the script as a superuser. Without one (a hosted PostgreSQL 15), keep the jobs on this role: each sync still proves, per transaction, that it wrote no protected table.';
END
"""
        ),
    ]


def _bookkeeping(roles: list[str], creators: list[str]) -> list[str]:
    out = [
        f"-- bookkeeping schema {BOOKKEEPING_SCHEMA}: the runner's delivery log (QStash de-duplication)",
        SCHEMA_SQL.strip(),
        f"GRANT USAGE ON SCHEMA {BOOKKEEPING_SCHEMA} TO {', '.join(roles)};",
        f"GRANT SELECT, INSERT, UPDATE ON {BOOKKEEPING_SCHEMA}.deliveries TO {', '.join(roles)};",
    ]
    if creators:
        out.append("-- its own bookkeeping tables (the content-sync ledger) are created, and owned, by the job")
        out.append(f"GRANT CREATE ON SCHEMA {BOOKKEEPING_SCHEMA} TO {', '.join(creators)};")
    return out


def generate(settings: Settings, database: str) -> str:
    """The roles script for one configured database (run it there)."""
    cfg = settings.config
    settings.check_database(database)
    cs = cfg.content_sync
    content = [TableRef.parse(t) for t in cs.tables]
    is_target = database == cs.target and bool(content)
    is_source = database == cs.source and bool(content)
    backup = database in cfg.backup.databases
    calendar = database == cfg.calendar.database

    roles: list[tuple[str, str]] = []
    if is_target or is_source:
        roles.append((CONTENT_ROLE, "safesync content sync: writes only the content tables"))
    if backup:
        roles.append((BACKUP_ROLE, "safesync backup and validate: read-only"))
    if calendar:
        roles.append((CALENDAR_ROLE, "safesync calendar sync: owns the calendar schema only"))
    names = [r for r, _ in roles]

    lines = [
        f"-- safesync least-privilege roles for database {database!r} (config: {cfg.databases[database]}).",
        f"-- Generated by `safesync roles sql --db {database}` from the config; re-run after changing it.",
        "-- Run as the database owner or a superuser, in that database:",
        '--   psql "<admin URL>" -v ON_ERROR_STOP=1 -f roles.sql',
        "-- Idempotent and all-or-nothing. No password is set here (PASSWORD NULL: no login",
        "-- until you set one). In psql, for each role below:",
    ]
    lines += [f"--   \\password {r}" for r in names]
    lines += [
        "-- then give each deployed job the URL with its own role (see infra/deploy.sh).",
        "-- Roles are cluster-wide: with several databases on one server, run each database's script",
        "-- (pg_read_all_data and BYPASSRLS, given below, then apply to every database of that server).",
        "-- Managed services whose admin is not a superuser (Cloud SQL, Supabase): the admin needs",
        "-- PostgreSQL 16+ and BYPASSRLS itself to give it to the job roles, and membership in safesync_calendar",
        "-- (GRANT safesync_calendar TO CURRENT_USER) to create the calendar schema for it.",
        "",
    ]
    if not roles:
        lines.append(f"-- No safesync job needs its own role in {database!r} (staging clone and migrate use the owner).")
        return "\n".join(lines) + "\n"

    lines.append("BEGIN;")
    lines.append("")
    lines.append("-- roles (created if missing)")
    for role, comment in roles:
        lines.append(_create_role(role, comment))
    lines.append(_do(f"BEGIN\n  EXECUTE format('GRANT CONNECT ON DATABASE %I TO {', '.join(names)}', current_database());\nEND"))
    lines.append("")
    for role in names:
        if role != CALENDAR_ROLE:
            lines.append(f"-- {role}: start from nothing, then grant exactly what it needs")
            lines.append(_revoke_everywhere(role))
    lines.append("")
    if is_target or backup or calendar:
        users = [r for r in names if r != CONTENT_ROLE or is_target]
        lines += _bookkeeping(users, [CONTENT_ROLE] if is_target else [])
        lines.append("")

    if is_target or is_source:
        schemas = sorted({t.schema for t in content})
        tables = ", ".join(_ident(t.schema, t.name) for t in content)
        lines.append(f"-- content sync ({'target' if is_target else 'source'}): content tables only")
        lines.append(f"GRANT USAGE ON SCHEMA {', '.join(_ident(s) for s in schemas)} TO {CONTENT_ROLE};")
        if is_target:
            verbs = "SELECT, INSERT, UPDATE" + (", DELETE" if cs.delete_missing else "")
            note = "" if cs.delete_missing else "  -- no DELETE: content_sync.delete_missing is false"
            lines.append(f"GRANT {verbs} ON TABLE {tables} TO {CONTENT_ROLE};{note}")
            lines.append(_owned_sequences_grant(content, CONTENT_ROLE))
            lines.append("-- read everything: the safety backup taken before each sync is a complete pg_dump,")
            lines.append("-- and deletes are checked against the protected rows that reference them")
            lines += _read_all(CONTENT_ROLE)
            protected = ", ".join(cs.protected) or "(none listed)"
            lines.append(f"-- protected (no write granted; every non-content table is protected): {protected}")
            lines.append(_prove(CONTENT_ROLE, content, "a non-content table"))
        else:
            lines.append(f"GRANT SELECT ON TABLE {tables} TO {CONTENT_ROLE};")
            lines.append(_prove(CONTENT_ROLE, [], "a table of the sync source"))
        lines.append("")

    if backup:
        lines += [
            "-- backup (and validate): read everything, write nothing",
            *_read_all(BACKUP_ROLE),
            "-- the weekly restore drill restores the newest dump into a scratch database it creates",
            "-- (and drops) beside the source: it owns only that scratch database, nothing else changes",
            f"ALTER ROLE {BACKUP_ROLE} CREATEDB;",
            _prove(BACKUP_ROLE, [], "a table"),
            "",
        ]

    if calendar:
        lines += [
            f"-- calendar sync: owns the {CALENDAR_SCHEMA} schema its migrations create (events, sync state,",
            "-- audit log, channels, rate limits); no privilege on any other schema's tables",
            _do(
                f"""
BEGIN
  IF to_regnamespace({_lit(CALENDAR_SCHEMA)}) IS NULL
     AND pg_has_role(current_user, {_lit(CALENDAR_ROLE)}, CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END) THEN
    CREATE SCHEMA {CALENDAR_SCHEMA} AUTHORIZATION {CALENDAR_ROLE};
  ELSE  -- created earlier by another role, or by us where (16+) a CREATEROLE admin may not SET ROLE to the
        -- roles it creates (AUTHORIZATION needs that): let the calendar role use and extend it
    CREATE SCHEMA IF NOT EXISTS {CALENDAR_SCHEMA};
    GRANT USAGE, CREATE ON SCHEMA {CALENDAR_SCHEMA} TO {CALENDAR_ROLE};
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {CALENDAR_SCHEMA} TO {CALENDAR_ROLE};
    GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {CALENDAR_SCHEMA} TO {CALENDAR_ROLE};
  END IF;
END
"""
            ),
            _prove(CALENDAR_ROLE, [], "a table outside its schema"),
            "",
        ]
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def roles_sql(args: argparse.Namespace, settings: Settings) -> Answer | None:
    database = args.db if args.db is not None else settings.config.content_sync.target
    text = generate(settings, database)
    if args.json:
        return Answer(200, {"database": database, "sql": text})
    print(text, end="")
    return None


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("roles", help="least-privilege database roles (SQL from the config)", parents=[parent])
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("sql", help="print the roles script for one database", parents=[parent])
    p.add_argument("--db", metavar="NAME", help="database to generate for (default: content_sync.target)")
    p.set_defaults(func=roles_sql)
