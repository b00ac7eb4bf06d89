"""Undoing a migration that committed: back to the ``premigrate`` backup.

``pg_restore --clean`` (what the backup job's restore runs, in one
transaction) drops and recreates every object *in the dump* — but it leaves
alone what the migration created, and fails outright when a new object
depends on an old one (``DROP TABLE users`` while the migration's new
``orders.user_id`` FK or view still points at it). So before restoring, the
objects the migration created or renamed are dropped:

1. before the migration, ``snapshot`` records every schema, relation,
   routine, type, extension and foreign key — and the objects ``pg_restore
   --clean`` never drops because they are not in the dump it restores:
   collations, text search configurations and dictionaries, operators,
   publications, event triggers, foreign servers — by catalog OID with its
   name;
2. after a failure, ``drop_new_objects`` drops — in one transaction — each
   object whose OID is new or whose name changed (foreign keys on old tables
   first, then views, tables, sequences, operators, routines, types,
   collations, extensions, schemas; objects inside a new schema go with it). ``CASCADE`` may reach
   old objects that now depend on new ones (a column of a new enum type):
   the restore recreates those from the dump right after;
3. ``restore_backup`` (safety backup of the broken state first, then
   ``pg_restore --clean --single-transaction``), confirmed by this run;
4. ``snapshot`` again: the set of named objects must equal the one before,
   and ``describe`` (validate's schema description: grants, comments,
   default privileges) too — else the report says what differs.

Not rolled back (outside a database dump): roles, database-level settings,
and anything in other databases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from safesync.shared.config import Settings
from safesync.shared.db import connect, user_schema
from safesync.shared.log import get_logger

log = get_logger("migrate")

# (catalog, oid) -> (kind, schema, name, extra); extra: a routine's
# arguments, a foreign key's table.
Snapshot = dict[tuple[str, int], tuple[str, str, str, str]]

SNAPSHOT_SQL = f"""
with ns as (
    select n.oid, n.nspname from pg_namespace n
    where {user_schema()}
), ext as (
    select classid, objid from pg_depend where deptype = 'e'
)
select 'pg_namespace', n.oid, 'schema', n.nspname, n.nspname, ''
from ns n where (('pg_namespace'::regclass, n.oid) not in (select * from ext))
union all
select 'pg_class', c.oid, 'relation:' || c.relkind::text, n.nspname, c.relname, ''
from pg_class c join ns n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
  and (('pg_class'::regclass, c.oid) not in (select * from ext))
  and not (c.relkind = 'S' and exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
           and d.objid = c.oid and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')))
union all
select 'pg_proc', p.oid, 'routine:' || p.prokind::text, n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
from pg_proc p join ns n on n.oid = p.pronamespace
where (('pg_proc'::regclass, p.oid) not in (select * from ext))
union all
select 'pg_type', t.oid, 'type:' || t.typtype::text, n.nspname, t.typname, ''
from pg_type t join ns n on n.oid = t.typnamespace
where (t.typtype in ('e', 'd', 'r') or (t.typtype = 'c' and (select relkind from pg_class where oid = t.typrelid) = 'c'))
  and (('pg_type'::regclass, t.oid) not in (select * from ext))
union all
select 'pg_constraint', k.oid, 'fk', n.nspname, k.conname, c.relname
from pg_constraint k join pg_class c on c.oid = k.conrelid join ns n on n.oid = c.relnamespace
where k.contype = 'f' and k.conparentid = 0
union all
select 'pg_extension', e.oid, 'extension', '', e.extname, ''
from pg_extension e
union all
select 'pg_collation', c.oid, 'collation', n.nspname, c.collname, ''
from pg_collation c join ns n on n.oid = c.collnamespace
where (('pg_collation'::regclass, c.oid) not in (select * from ext))
union all
select 'pg_ts_config', c.oid, 'tsconfig', n.nspname, c.cfgname, ''
from pg_ts_config c join ns n on n.oid = c.cfgnamespace
where (('pg_ts_config'::regclass, c.oid) not in (select * from ext))
union all
select 'pg_ts_dict', d.oid, 'tsdict', n.nspname, d.dictname, ''
from pg_ts_dict d join ns n on n.oid = d.dictnamespace
where (('pg_ts_dict'::regclass, d.oid) not in (select * from ext))
union all
select 'pg_operator', o.oid, 'operator', n.nspname, o.oprname,
       case when o.oprleft = 0 then 'none' else format_type(o.oprleft, null) end || ', ' || format_type(o.oprright, null)
from pg_operator o join ns n on n.oid = o.oprnamespace
where (('pg_operator'::regclass, o.oid) not in (select * from ext))
union all
select 'pg_publication', p.oid, 'publication', '', p.pubname, ''
from pg_publication p
union all
select 'pg_event_trigger', t.oid, 'event trigger', '', t.evtname, ''
from pg_event_trigger t
where (('pg_event_trigger'::regclass, t.oid) not in (select * from ext))
union all
select 'pg_foreign_server', s.oid, 'server', '', s.srvname, ''
from pg_foreign_server s
where (('pg_foreign_server'::regclass, s.oid) not in (select * from ext))
"""

# Drop order: what others depend on goes last.
_ORDER = [
    "event trigger", "publication", "fk", "relation:v", "relation:m", "relation:r", "relation:p", "relation:f", "relation:S",
    "server", "operator", "tsconfig", "tsdict", "routine", "type", "collation", "extension", "schema",
]  # fmt: skip

# Characters of an operator's name (it is not an identifier and cannot be quoted as one).
_OPERATOR_CHARS = frozenset("+-*/<>=~!@#%^&|`?")


def snapshot(conn: psycopg.Connection) -> Snapshot:
    with conn.transaction():
        rows = conn.execute(SNAPSHOT_SQL).fetchall()
    return {(cat, oid): (kind, schema, name, extra) for cat, oid, kind, schema, name, extra in rows}


def changed_objects(before: Snapshot, now: Snapshot) -> list[tuple[str, str, str, str]]:
    """Objects of ``now`` that are new or renamed since ``before``, minus
    those inside a schema that is itself new (dropped with it)."""
    fresh = [ident for key, ident in now.items() if before.get(key) != ident]
    new_schemas = {name for kind, _, name, _ in fresh if kind == "schema"}
    return [i for i in fresh if i[0] == "schema" or i[0] == "extension" or i[1] not in new_schemas]


def names(snap: Snapshot) -> set[tuple[str, str, str, str]]:
    return set(snap.values())


def _rank(kind: str) -> int:
    for i, prefix in enumerate(_ORDER):
        if kind == prefix or kind.startswith(prefix + ":"):
            return i
    return len(_ORDER)


_WORDS = {
    "relation:r": "table", "relation:p": "table", "relation:v": "view", "relation:m": "materialized view",
    "relation:S": "sequence", "relation:f": "foreign table", "routine:p": "procedure", "routine:a": "aggregate",
    "type:d": "domain", "fk": "foreign key", "tsconfig": "text search configuration", "tsdict": "text search dictionary",
}  # fmt: skip


def label(kind: str, schema: str, name: str, extra: str) -> str:
    """``table public.orders``, ``function public.f(integer)``, ``foreign key x on public.t``."""
    word = _WORDS.get(kind) or ("function" if kind.startswith("routine:") else kind.split(":")[0])
    if kind in ("schema", "extension", "publication", "event trigger", "server"):
        return f"{word} {name}"
    if kind == "fk":
        return f"{word} {name} on {schema}.{extra}"
    return f"{word} {schema}.{name}" + (f"({extra})" if kind.startswith("routine:") or kind == "operator" else "")


def drop_statement(kind: str, schema: str, name: str, extra: str) -> sql.Composable:
    obj = sql.Identifier(schema, name)
    if kind == "fk":
        return sql.SQL("alter table if exists {} drop constraint if exists {} cascade").format(
            sql.Identifier(schema, extra), sql.Identifier(name)
        )
    if kind.startswith("relation:"):
        what = {"v": "view", "m": "materialized view", "r": "table", "p": "table", "f": "foreign table", "S": "sequence"}[kind[-1]]
        return sql.SQL("drop {} if exists {} cascade").format(sql.SQL(what), obj)
    if kind.startswith("routine:"):
        what = {"p": "procedure", "a": "aggregate"}.get(kind[-1], "function")
        # the argument list is the catalog's own rendering (types quoted by the server)
        return sql.SQL("drop {} if exists {}({}) cascade").format(sql.SQL(what), obj, sql.SQL(extra))
    if kind.startswith("type:"):
        return sql.SQL("drop {} if exists {} cascade").format(sql.SQL("domain" if kind == "type:d" else "type"), obj)
    if kind == "extension":
        return sql.SQL("drop extension if exists {} cascade").format(sql.Identifier(name))
    if kind in ("publication", "event trigger", "server"):
        return sql.SQL("drop {} if exists {} cascade").format(sql.SQL(kind), sql.Identifier(name))
    if kind in ("collation", "tsconfig", "tsdict"):
        what = {"collation": "collation", "tsconfig": "text search configuration", "tsdict": "text search dictionary"}[kind]
        return sql.SQL("drop {} if exists {} cascade").format(sql.SQL(what), obj)
    if kind == "operator":
        if not name or not set(name) <= _OPERATOR_CHARS:
            raise ValueError(f"not an operator name: {name!r}")
        # OPERATOR(schema.op) names it whatever the search_path; the types are the catalog's rendering
        return sql.SQL("drop operator if exists {}.{} ({}) cascade").format(sql.Identifier(schema), sql.SQL(name), sql.SQL(extra))
    if kind == "schema":
        return sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name))
    raise ValueError(f"unknown object kind {kind}")


def drop_new_objects(conn: psycopg.Connection, before: Snapshot, lock_timeout: str) -> list[str]:
    """Drop (one transaction) what the migration created or renamed; returns
    their descriptions."""
    dropped = []
    with conn.transaction():
        conn.execute("select set_config('lock_timeout', %s, true)", [lock_timeout])
        objects = sorted(changed_objects(before, snapshot(conn)), key=lambda o: (_rank(o[0]), o[1], o[2]))
        for kind, schema, name, extra in objects:
            conn.execute(drop_statement(kind, schema, name, extra))
            dropped.append(label(kind, schema, name, extra))
    return dropped


def describe(conn: psycopg.Connection, snap: Snapshot) -> dict[str, Any]:
    """The definitions of the snapshot's schemas as ``validate`` compares
    them (grants, comments, default privileges, columns, …), sequence
    positions left out (data, which the application moves meanwhile).
    Names alone cannot see what a migration changed *on* an object the
    restore does not recreate: ``GRANT CREATE ON SCHEMA public TO PUBLIC``,
    ``ALTER DEFAULT PRIVILEGES`` (whose grants the restore's new tables
    then get), a comment on a schema — all left by ``pg_restore --clean``."""
    from safesync.functions.validate.catalog import describe_schema

    schemas = sorted(name for kind, _, name, _ in snap.values() if kind == "schema")
    with conn.transaction():
        described = describe_schema(conn, schemas)
    described.pop("sequence positions", None)
    return described


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``kind object: what`` of each definition that differs after the restore."""
    from safesync.functions.validate.schema_diff import compare_maps

    out = []
    for d in compare_maps(before, after):
        what = {"only in A": "gone", "only in B": "left over"}.get(d.change, f"{d.attribute or 'definition'} differs")
        out.append(f"{d.kind} {d.name}: {what}")
    return out


@dataclass
class Rollback:
    backup_id: str
    dropped: list[str]
    restore: dict[str, Any]
    leftover: list[str]
    missing: list[str]
    differing: list[str] = field(default_factory=list)  # definitions not as before (grants, comments, …)

    @property
    def exact(self) -> bool:
        return not self.leftover and not self.missing and not self.differing

    def details(self) -> dict[str, Any]:
        return {
            "method": "restore from the premigrate backup",
            "backup": self.backup_id,
            "objects_dropped_first": self.dropped,
            "restore": self.restore,
            "objects_left_over": self.leftover,
            "objects_missing": self.missing,
            "definitions_differing": self.differing,
        }


def restore_premigrate(
    settings: Settings, db: str, backup_id: str, before: Snapshot, report=None, described: dict[str, Any] | None = None
) -> Rollback:
    """Put ``db`` back to the ``premigrate`` backup (see the module doc);
    ``described``: ``describe`` of the target before the migration, compared
    with the restored one. Raises what the restore raises; the caller
    reports it."""
    from safesync.functions.backup import restore_backup

    cfg = settings.config.migrate
    url = settings.database_url(db)
    with connect(url, autocommit=True, application_name="safesync-migrate-rollback") as conn:
        dropped = drop_new_objects(conn, before, cfg.lock_timeout)
    log.info("rolling back by restore", backup=backup_id, database=db, dropped=len(dropped))
    result = restore_backup(settings, backup_id, db, confirm=db, report=report)
    restore = result.details()
    restore["warnings"] = result.warnings
    with connect(url, autocommit=True, application_name="safesync-migrate-rollback") as conn:
        now = snapshot(conn)
        differing = differences(described, describe(conn, now)) if described is not None else []
    after, expected = names(now), names(before)
    leftover = sorted(label(*o) for o in after - expected)
    missing = sorted(label(*o) for o in expected - after)
    return Rollback(backup_id, dropped, restore, leftover, missing, differing)
