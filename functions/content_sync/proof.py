"""The protection proof: evidence, taken inside the sync transaction, that
it changed nothing outside the content tables — no row, no definition, no
sequence.

``start`` is called before the first write, ``finish`` after the last
statement (after ``SET CONSTRAINTS ALL IMMEDIATE``, so deferred triggers
have fired; the caller runs nothing but the content sequences' moves and
COMMIT afterwards), and ``verify`` compares them. Four kinds of evidence,
each about *this* transaction only, so the application working concurrently
can neither fail nor pass it:

1. **Row counters.** ``pg_stat_get_xact_tuples_*`` count the rows this
   transaction inserted, updated and deleted in every relation with
   storage — user tables in any schema (``information_schema`` included),
   TOAST tables (counted for their table), materialized views and the
   system catalogs — rows written by triggers, rules and FK cascades
   included. A count on anything but the content tables (and their
   partitions), the ledger, temporary tables and the catalogs that creating
   a temporary table or the ledger writes (``ALLOWED_CATALOGS``) is a write:
   ``pg_largeobject`` is large-object data (``lo_put``), ``pg_authid`` roles,
   ``pg_db_role_setting`` ``ALTER DATABASE/ROLE … SET``, ``pg_proc``
   functions…
2. **The catalog.** Every non-temporary relation of every schema (the
   objects initdb creates in ``pg_catalog`` / ``information_schema``
   excepted) and the rows describing it — the relation itself (name, file
   node, owner, ACL, RLS flags), columns, defaults, constraints, indexes,
   triggers (enabled state), policies, rules, sequence parameters. A
   catalog row this transaction wrote is visible to it with an ``xmin`` of
   its own (``age(xmin) <= 0``: rows of other transactions are older, or
   invisible under the snapshot); a row it deleted is counted in that
   catalog's counters. Only the catalogs the counters show written are
   scanned. What was there before — to name a dropped column, to tell a
   rename from a new table — is read when needed from the transaction's
   own starting snapshot, exported at ``start`` and imported by a second,
   read-only session that does not see this transaction's changes
   (``Past``). DDL on a protected table is a write; the sync never does DDL
   on a content table either, so that is reported too.
3. **Locks.** A transaction keeps every lock it took until it ends. Any
   INSERT/UPDATE/DELETE/MERGE takes ROW EXCLUSIVE on its table — also when
   it changed no row, and whether or not anything counted it — and
   ``nextval``/``setval`` take it on the sequence, kept even when a savepoint
   rolled back (sequence values are not transactional: ROLLBACK cannot undo
   them). A protected table locked for writing must be explained by counted
   rows or by an FK action from a content table the sync deleted or
   updated; a protected sequence locked so was used; SHARE UPDATE
   EXCLUSIVE and stronger on a protected relation is DDL (or LOCK TABLE).
4. **Settings.** ``track_counts`` must be on at the start (else the sync is
   refused before writing: counters would count nothing) and at the end;
   ``session_replication_role`` (which silences triggers and FK actions)
   must not have changed.

Proof queries run with ``search_path = pg_catalog, pg_temp``: a trigger that
puts its own schema first cannot shadow ``pg_locks`` or ``pg_class``.

The counters also tell the post-sync check how many rows of each content
table the transaction touched (``writes``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import psycopg
from psycopg import sql

from safesync.shared.db import TableRef, connect
from safesync.shared.errors import SafesyncError

FIRST_NORMAL_OID = 16384  # objects below it were created by initdb
ALLOWED_CATALOGS = frozenset(
    {"pg_class", "pg_attribute", "pg_attrdef", "pg_type", "pg_constraint", "pg_index", "pg_depend", "pg_shdepend", "pg_namespace"}
)
CATALOG_MEANING = {
    "pg_largeobject": "large object data",
    "pg_largeobject_metadata": "large objects",
    "pg_authid": "roles",
    "pg_auth_members": "role memberships",
    "pg_db_role_setting": "database or role settings",
    "pg_proc": "functions",
    "pg_trigger": "triggers",
    "pg_policy": "policies",
    "pg_rewrite": "rules or views",
    "pg_event_trigger": "event triggers",
    "pg_sequence": "sequence parameters",
    "pg_database": "databases",
}
LOCK_LEVEL = {
    "AccessShareLock": 1,
    "RowShareLock": 2,
    "RowExclusiveLock": 3,
    "ShareUpdateExclusiveLock": 4,
    "ShareLock": 5,
    "ShareRowExclusiveLock": 6,
    "ExclusiveLock": 7,
    "AccessExclusiveLock": 8,
}
_WRITE, _DDL = LOCK_LEVEL["RowExclusiveLock"], LOCK_LEVEL["ShareUpdateExclusiveLock"]
TRIGGER_STATE = {"O": "enabled", "D": "disabled", "R": "enabled in replica mode only", "A": "always enabled"}

_RELATIONS = """
select c.oid, n.nspname, c.relname, c.relkind::text, c.relfilenode, c.relowner, coalesce(c.relacl::text, ''),
       c.relrowsecurity, c.relforcerowsecurity
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S', 'c') and c.relpersistence <> 't'
  and (c.oid >= {first} or n.nspname not in ('pg_catalog', 'information_schema'))
""".format(first=FIRST_NORMAL_OID)
# per catalog, the rows describing each relation (columns by attnum, the rest by OID): compared to
# find what was dropped, and to name it
_ITEMS = {
    "pg_attribute": """select 'column', a.attnum::oid, a.attrelid, a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid
        where a.attrelid >= {first} and a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c') and c.relpersistence <> 't'""",
    "pg_attrdef": """select 'default', d.oid, d.adrelid, a.attname from pg_attrdef d
        join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum where d.adrelid >= {first}""",
    "pg_constraint": "select 'constraint', k.oid, k.conrelid, k.conname from pg_constraint k where k.conrelid >= {first}",
    "pg_index": "select 'index', i.indexrelid, i.indrelid, x.relname from pg_index i join pg_class x on x.oid = i.indexrelid where i.indrelid >= {first}",
    "pg_trigger": "select 'trigger', t.oid, t.tgrelid, t.tgname from pg_trigger t where t.tgrelid >= {first} and not t.tgisinternal",
    "pg_policy": "select 'policy', p.oid, p.polrelid, p.polname from pg_policy p where p.polrelid >= {first}",
    "pg_rewrite": "select 'rule', r.oid, r.ev_class, r.rulename from pg_rewrite r where r.ev_class >= {first}",
}
_ITEMS = {catalog: q.format(first=FIRST_NORMAL_OID) for catalog, q in _ITEMS.items()}
_KIND_CATALOG = {"column": "pg_attribute", "default": "pg_attrdef", "constraint": "pg_constraint", "index": "pg_index", "trigger": "pg_trigger", "policy": "pg_policy", "rule": "pg_rewrite"}
# per catalog, its rows this transaction wrote (see the module doc); indexes and TOAST count for their table
_MINE = {
    "pg_class": """select case when i.indexrelid is not null then 'index storage' when o.oid is not null then 'toast' else 'relation' end,
        c.oid, coalesce(o.oid, i.indrelid, c.oid), c.relname from pg_class c
        left join pg_index i on i.indexrelid = c.oid left join pg_class o on o.reltoastrelid = coalesce(i.indrelid, c.oid)
        where age(c.xmin) <= 0 and c.relpersistence <> 't'""",
    "pg_attribute": """select 'column', a.attnum::oid, a.attrelid, case when not a.attisdropped then a.attname end from pg_attribute a
        where age(a.xmin) <= 0 and a.attnum > 0""",
    "pg_attrdef": "select 'default', d.oid, d.adrelid, '' from pg_attrdef d where age(d.xmin) <= 0",
    "pg_constraint": "select 'constraint', k.oid, k.conrelid, k.conname from pg_constraint k where age(k.xmin) <= 0",
    "pg_index": "select 'index', i.indexrelid, i.indrelid, x.relname from pg_index i join pg_class x on x.oid = i.indexrelid where age(i.xmin) <= 0",
    "pg_trigger": "select 'trigger', t.oid, t.tgrelid, t.tgname || ' ' || t.tgenabled::text from pg_trigger t where age(t.xmin) <= 0",
    "pg_policy": "select 'policy', p.oid, p.polrelid, p.polname from pg_policy p where age(p.xmin) <= 0",
    "pg_rewrite": "select 'rule', r.oid, r.ev_class, r.rulename from pg_rewrite r where age(r.xmin) <= 0",
    "pg_sequence": "select 'sequence', s.seqrelid, s.seqrelid, '' from pg_sequence s where age(s.xmin) <= 0",
}
# Catalog rows that describe no relation — schemas, types that are no relation's row type (domains,
# enums, ranges, base types, and their arrays), domain constraints — by (kind, oid) -> name: written by
# this transaction (``_OTHER_MINE``; the temporary schemas excepted), and as they are (``_OTHER_ITEMS``,
# compared with the past to find what was dropped). Protected tables' columns depend on them: ALTER
# DOMAIN … DROP CONSTRAINT, REVOKE USAGE ON SCHEMA are writes too.
_OTHER = {
    "pg_namespace": ("select 'schema', n.oid, n.nspname::text from pg_namespace n where n.nspname !~ '^pg_(toast_)?temp_[0-9]+$'", "n"),
    "pg_type": (
        "select 'type', t.oid, format_type(t.oid, null) from pg_type t left join pg_type e on e.oid = t.typelem "
        "where t.typrelid = 0 and coalesce(e.typrelid, 0) = 0",
        "t",
    ),
    "pg_constraint": (
        "select 'constraint', k.oid, k.conname || ' of type ' || format_type(k.contypid, null) from pg_constraint k where k.conrelid = 0",
        "k",
    ),
}
_OTHER_MINE = {catalog: f"{q} and age({alias}.xmin) <= 0" for catalog, (q, alias) in _OTHER.items()}
# every schema (public's OID is initdb's), and the types and domain constraints created after initdb
_OTHER_ITEMS = {catalog: q if catalog == "pg_namespace" else f"{q} and {alias}.oid >= {FIRST_NORMAL_OID}" for catalog, (q, alias) in _OTHER.items()}
_COUNTERS = """
select b.oid, n.nspname, b.relname, b.relpersistence = 't', b.oid < {first} and n.nspname = 'pg_catalog',
       sum(s.ins)::bigint, sum(s.upd)::bigint, sum(s.del)::bigint
from (select coalesce(o.oid, c.oid) as base, pg_stat_get_xact_tuples_inserted(c.oid) as ins,
             pg_stat_get_xact_tuples_updated(c.oid) as upd, pg_stat_get_xact_tuples_deleted(c.oid) as del
      from pg_class c left join pg_class o on o.reltoastrelid = c.oid
      where c.relkind in ('r', 't', 'm')) s
join pg_class b on b.oid = s.base join pg_namespace n on n.oid = b.relnamespace
where s.ins + s.upd + s.del > 0
group by 1, 2, 3, 4, 5
""".format(first=FIRST_NORMAL_OID)
_LOCKS = """
select coalesce(o.oid, i.indrelid, l.relation), l.mode from pg_locks l
left join pg_index i on i.indexrelid = l.relation
left join pg_class o on o.reltoastrelid = coalesce(i.indrelid, l.relation)
where l.locktype = 'relation' and l.pid = pg_backend_pid() and l.granted
  and l.database = (select oid from pg_database where datname = current_database())
"""


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str
    filenode: int
    owner: int
    acl: str
    rls: tuple[bool, bool]

    @property
    def label(self) -> str:
        return TableRef(self.schema, self.name).short


@dataclass(frozen=True)
class Counter:
    schema: str
    name: str
    temporary: bool
    catalog: bool  # a system catalog of initdb's
    inserted: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class Start:
    """The proof's look before the first write."""

    snapshot: str  # the transaction's snapshot, exported: ``Past`` reads the catalog as it was
    counters: dict[int, "Counter"]  # table relid (TOAST counted for its table) -> this transaction's rows
    settings: dict[str, str]

    @property
    def counting(self) -> bool:
        return self.settings.get("track_counts") == "on"


@dataclass
class End:
    """The proof's look after the last statement."""

    relations: dict[int, Relation]
    counters: dict[int, Counter]
    settings: dict[str, str]
    locks: dict[int, str] = field(default_factory=dict)  # relid -> strongest mode held
    mine: list[tuple[str, int, int, str | None]] = field(default_factory=list)  # catalog rows this transaction wrote
    deleted: set[str] = field(default_factory=set)  # catalogs it deleted rows of
    others: dict[tuple[str, int], str] = field(default_factory=dict)  # schemas, types, domain constraints it wrote

    @property
    def counting(self) -> bool:
        return self.settings.get("track_counts") == "on"


@dataclass
class ProofResult:
    checked: int
    violations: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one per protected table, for the report

    @property
    def ok(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        return ", ".join(f"{v['table']} ({'; '.join(_counts(v) + v['changes'])})" for v in self.violations)


def _counts(row: dict) -> list[str]:
    return [f"{row[k]} {k}" for k in ("inserted", "updated", "deleted") if row.get(k)]


@contextmanager
def catalog_path(conn: psycopg.Connection) -> Iterator[None]:
    """Run the enclosed queries with ``search_path = pg_catalog, pg_temp``
    (nothing a trigger created can shadow a catalog name), then restore
    the transaction's own setting."""
    previous = conn.execute(
        "select s.previous, pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true) "
        "from (select pg_catalog.current_setting('search_path') as previous offset 0) s"
    ).fetchone()[0]
    try:
        yield
    finally:
        # in a failed transaction the restore would fail too, hiding the error that failed it
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute(sql.SQL("select pg_catalog.set_config('search_path', {}, true)").format(sql.Literal(previous)))


def counters(conn: psycopg.Connection) -> dict[int, Counter]:
    """This transaction's row counts, per table (TOAST counted for its
    table); tables it wrote nothing to are left out."""
    with catalog_path(conn):
        return _counters(conn.execute(_COUNTERS))


def _counters(rows: Iterable) -> dict[int, Counter]:
    return {relid: Counter(*rest) for relid, *rest in rows}


_SETTINGS_SQL = "select name, setting from pg_settings where name = any('{track_counts,session_replication_role}')"


def start(conn: psycopg.Connection) -> Start:
    with catalog_path(conn), conn.pipeline():  # one round trip
        snapshot = conn.execute("select pg_export_snapshot()")
        counts = conn.execute(_COUNTERS)
        settings = conn.execute(_SETTINGS_SQL)
    return Start(snapshot.fetchone()[0], _counters(counts.fetchall()), dict(settings.fetchall()))


def finish(conn: psycopg.Connection) -> End:
    """What this transaction did: its counters, locks and settings, the
    relations as they are now, and the catalog rows it wrote — read only
    from the catalogs its counters show written (a catalog row written is a
    row counted; ``track_counts`` is checked)."""
    with catalog_path(conn):
        with conn.pipeline():
            relations = conn.execute(_RELATIONS)
            counts = conn.execute(_COUNTERS)
            settings = conn.execute(_SETTINGS_SQL)
            locks = conn.execute(_LOCKS)
        end = End(
            {r[0]: Relation(r[1], r[2], r[3], r[4], r[5], r[6], (r[7], r[8])) for r in relations.fetchall()},
            _counters(counts.fetchall()),
            dict(settings.fetchall()),
        )
        for relid, mode in locks.fetchall():
            if LOCK_LEVEL.get(mode, 0) > LOCK_LEVEL.get(end.locks.get(relid, ""), 0):
                end.locks[relid] = mode
        catalogs = {c.name: c for c in end.counters.values() if c.catalog}
        end.deleted = {name for name, c in catalogs.items() if c.deleted}
        written = [name for name, c in catalogs.items() if c.inserted or c.updated]
        with conn.pipeline():
            mine = [conn.execute(_MINE[name]) for name in written if name in _MINE]
            others = [conn.execute(_OTHER_MINE[name]) for name in written if name in _OTHER_MINE]
        end.mine = [row for cursor in mine for row in cursor.fetchall()]
        end.others = {(kind, oid): name for cursor in others for kind, oid, name in cursor.fetchall()}
    return end


class Past:
    """The catalog as the transaction found it: a second, read-only session
    importing the transaction's exported snapshot, which sees neither this
    transaction's changes nor later commits of others. Opened only when
    something needs explaining (a violation), closed by the caller."""

    def __init__(self, url: str, snapshot: str) -> None:
        self.url, self.snapshot = url, snapshot
        self._conn: psycopg.Connection | None = None

    def _session(self) -> psycopg.Connection:
        if self._conn is None:
            conn = connect(self.url, application_name="safesync-proof-past")
            conn.execute("set transaction isolation level repeatable read, read only")
            conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(self.snapshot)))
            conn.execute("set local search_path to pg_catalog, pg_temp")
            self._conn = conn
        return self._conn

    def relations(self) -> dict[int, Relation]:
        return {r[0]: Relation(r[1], r[2], r[3], r[4], r[5], r[6], (r[7], r[8])) for r in self._session().execute(_RELATIONS)}

    def others(self, catalogs: Iterable[str]) -> dict[tuple[str, int], str]:
        """(kind, oid) -> name of the schemas, types and domain constraints (``_OTHER``) of the given catalogs."""
        return {(kind, oid): name for catalog in catalogs for kind, oid, name in self._session().execute(_OTHER_ITEMS[catalog])}

    def items(self, catalogs: Iterable[str]) -> dict[tuple[str, int, int], str]:
        """(kind, relid, oid or attnum) -> name, of the given catalogs."""
        return {(kind, relid, oid): name for catalog in catalogs for kind, oid, relid, name in self._session().execute(_ITEMS[catalog])}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def content_relids(conn: psycopg.Connection, tables: Iterable[TableRef]) -> tuple[dict[TableRef, set[int]], set[int]]:
    """Each content table's OID with its partitions', and the sequences they
    own or draw their defaults from: what the sync may write and move."""
    tables = list(tables)
    with catalog_path(conn):
        trees: dict[TableRef, set[int]] = {t: set() for t in tables}
        names = [t.ident.as_string(conn) for t in tables]
        # pg_partition_tree lists nothing for a plain table: the table itself is added
        for i, relid in conn.execute(
            "select t.i, t.relid::oid from unnest(%(n)s::regclass[]) with ordinality as t(relid, i) "
            "union select t.i, p.relid::oid from unnest(%(n)s::regclass[]) with ordinality as t(relid, i), pg_partition_tree(t.relid) p",
            {"n": names},
        ):
            trees[tables[i - 1]].add(relid)
        relids = sorted(set().union(*trees.values()))
        rows = conn.execute(
            """
            select d.objid from pg_depend d join pg_class s on s.oid = d.objid and s.relkind = 'S'
            where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass and d.refobjid = any(%(t)s) and d.deptype in ('a', 'i')
            union
            select d.refobjid from pg_depend d join pg_attrdef ad on d.classid = 'pg_attrdef'::regclass and d.objid = ad.oid
            join pg_class s on s.oid = d.refobjid and s.relkind = 'S'
            where ad.adrelid = any(%(t)s) and d.refclassid = 'pg_class'::regclass
            """,
            {"t": relids},
        ).fetchall()
    return trees, {r[0] for r in rows}


def _rows(counts: dict[int, Counter], relid: int) -> tuple[int, int, int]:
    c = counts.get(relid)
    return (c.inserted, c.updated, c.deleted) if c else (0, 0, 0)


def _written(start: Start, end: End, relid: int) -> tuple[int, int, int]:
    """Rows of ``relid`` inserted, updated and deleted between ``start`` and
    ``end``: the counters do not start at zero on a backend whose earlier
    transactions' counts are not flushed yet (at most once a second) — one a
    pooler hands over, or this connection's own previous transaction."""
    return tuple(a - b for a, b in zip(_rows(end.counters, relid), _rows(start.counters, relid)))


def writes(before: dict[int, Counter], after: dict[int, Counter], relids: set[int]) -> tuple[int, int]:
    """Rows inserted or updated, and rows deleted, in ``relids`` by this
    transaction between two ``counters`` readings."""
    upserted = deleted = 0
    for relid in relids:
        (ins, upd, dele), (ins0, upd0, del0) = _rows(after, relid), _rows(before, relid)
        upserted += (ins - ins0) + (upd - upd0)
        deleted += dele - del0
    return upserted, deleted


def _catalog_changes(end: End, past: Past, conn: psycopg.Connection, skip: set[int]) -> dict[int, list[str]]:
    """relid -> what this transaction changed in the definitions of
    relations (``skip``: the ledger). The past is read only when there is
    something to explain."""
    mine = [row for row in end.mine if row[2] in end.relations and row[2] not in skip]
    deleted = end.deleted & set(_ITEMS)
    if not mine and not (end.deleted & ({"pg_class"} | deleted)):
        return {}
    before = past.relations()
    old = past.items({_KIND_CATALOG[kind] for kind, *_ in mine if kind in _KIND_CATALOG} | {"pg_index"} | deleted)
    changes: dict[int, list[str]] = {}

    def note(relid: int, text: str) -> None:
        if relid not in skip and text not in changes.setdefault(relid, []):
            changes[relid].append(text)

    for relid in before:
        if relid not in end.relations:
            note(relid, "dropped")
    for kind, oid, relid, name in mine:
        if relid not in before:
            note(relid, "created")
            continue
        was = old.get((kind, relid, oid))
        if kind == "relation":
            note(relid, _relation_change(before[relid], end.relations[relid]))
        elif kind == "index storage":
            if ("index", relid, oid) in old:  # a new index says so through its pg_index row
                note(relid, f"index {name} rebuilt or altered")
        elif kind == "toast":
            note(relid, "TOAST table rewritten")
        elif kind == "column":
            if name is None:
                note(relid, f"column {was or oid} dropped")
            elif was is None:
                note(relid, f"column {name} added")
            else:
                note(relid, f"column {was} changed" if was == name else f"column {was} renamed to {name}")
        elif kind == "sequence":
            note(relid, "sequence parameters changed (ALTER SEQUENCE)")
        elif kind == "default":
            note(relid, f"default of column {was} changed" if was else "column default added")
        elif kind == "trigger":
            tgname, _, state = name.rpartition(" ")
            note(relid, f"trigger {tgname} {'changed' if was else 'created'} (now {TRIGGER_STATE.get(state, state)})")
        else:
            note(relid, f"{kind} {name} {'changed' if was else 'created'}")
    if deleted:
        now = {key for catalog in deleted for key in _current_items(conn, catalog)}
        for (kind, relid, oid), name in old.items():
            if _KIND_CATALOG[kind] in deleted and relid in end.relations and (kind, relid, oid) not in now:
                note(relid, f"{'default of column' if kind == 'default' else kind} {name} dropped")
    return {relid: texts for relid, texts in changes.items() if texts}


def _other_changes(end: End, past: Past, conn: psycopg.Connection, own_schema: str | None) -> dict[str, list[str]]:
    """label ("schema public", "type public.email") -> what this transaction
    did to the schemas, types and domain constraints (``_OTHER``);
    ``own_schema``: the schema the sync created for its ledger."""
    written = {key: name for key, name in end.others.items() if not (key[0] == "schema" and name == own_schema)}
    deleted = end.deleted & set(_OTHER)
    if not written and not deleted:
        return {}
    old = past.others(set(_OTHER))
    out = {f"{kind} {name}": [f"{'changed' if (kind, oid) in old else 'created'} by this transaction"] for (kind, oid), name in written.items()}
    if deleted:
        with catalog_path(conn):
            now = {(kind, oid) for catalog in deleted for kind, oid, _ in conn.execute(_OTHER_ITEMS[catalog])}
        for (kind, oid), name in old.items():
            if (kind, oid) not in now and {"schema": "pg_namespace", "type": "pg_type", "constraint": "pg_constraint"}[kind] in deleted:
                out[f"{kind} {name}"] = ["dropped"]
    return out


def _current_items(conn: psycopg.Connection, catalog: str) -> set[tuple[str, int, int]]:
    with catalog_path(conn):
        return {(kind, relid, oid) for kind, oid, relid, _ in conn.execute(_ITEMS[catalog])}


def _relation_change(old: Relation, new: Relation) -> str:
    if (old.schema, old.name) != (new.schema, new.name):
        return f"renamed to {new.label}"
    if old.filenode != new.filenode:
        return "truncated or rewritten (new file node)"
    if old.owner != new.owner:
        return "owner changed"
    if old.acl != new.acl:
        return "privileges changed (GRANT/REVOKE)"
    if old.rls != new.rls:
        return "row level security changed"
    return "definition changed (ALTER)"


def verify(
    start: Start, end: End, allowed: set[int], *, ledger: int, past: Past, conn: psycopg.Connection, cascaded: set[int] = frozenset(),
    ledger_changes: Iterable[str] = (), own_schema: str | None = None,
) -> ProofResult:
    """Compare the two looks. Rows may have been written only in ``allowed``
    (content tables, their partitions and sequences) and the ledger; no
    definition may have changed but the ledger's (created or migrated by
    ``ledger.ensure``). ``ledger_changes``: what changed in the ledger that
    the sync's own statements did not (``ledger_watch``); ``own_schema``: the
    schema ``ensure`` created for the ledger, if it did.
    ``cascaded``: protected tables an FK action from a content table the
    sync deleted or updated may have locked for writing (RI runs its
    DELETE/UPDATE even when no row references the content row)."""
    allowed = allowed | {ledger}
    result = ProofResult(checked=0)
    found: dict[str, dict] = {}

    def violation(label: str) -> dict:
        return found.setdefault(label, {"table": label, "inserted": 0, "updated": 0, "deleted": 0, "changes": []})

    for name in ("track_counts", "session_replication_role"):
        if end.settings.get(name) != start.settings.get(name):
            violation("(session)")["changes"].append(f"{name} changed from {start.settings.get(name)} to {end.settings.get(name)}")
    if not end.counting:
        violation("(session)")["changes"].append("track_counts is off: the row counters counted nothing")
    for text in ledger_changes:
        violation("safesync.content_ledger")["changes"].append(text)
    relations = dict(end.relations)
    try:
        catalog = _catalog_changes(end, past, conn, {ledger})
        if catalog.keys() - relations.keys():
            relations = {**past.relations(), **relations}  # dropped ones
        for label, texts in _other_changes(end, past, conn, own_schema).items():
            violation(label)["changes"].extend(texts)
    except (psycopg.Error, SafesyncError) as exc:  # the past could not be read: still a violation, unnamed
        catalog = {}
        touched = sorted(
            {end.relations[row[2]].label for row in end.mine if row[2] != ledger and row[2] in end.relations}
            | {f"{kind} {name}" for (kind, _), name in end.others.items() if not (kind == "schema" and name == own_schema)}
            | end.deleted
        )
        violation("(catalog)")["changes"].append(
            f"this transaction changed definitions ({', '.join(map(str, touched))}) that could not be named: {getattr(exc, 'message', None) or type(exc).__name__}"
        )
    for relid, texts in catalog.items():
        violation(relations[relid].label)["changes"].extend(texts)
    counted: set[int] = set()
    for relid, c in end.counters.items():
        if relid in allowed or c.temporary or (c.catalog and c.name in ALLOWED_CATALOGS):
            continue
        ins, upd, dele = _written(start, end, relid)
        if not (ins or upd or dele):
            continue
        counted.add(relid)
        row = violation(relations[relid].label if relid in relations else f"{c.schema}.{c.name}")
        row["inserted"], row["updated"], row["deleted"] = ins, upd, dele
        if c.catalog and c.name in CATALOG_MEANING:
            row["changes"].append(f"{CATALOG_MEANING[c.name]} written")
    for relid, mode in end.locks.items():
        rel = relations.get(relid)
        if rel is None or relid in allowed:
            continue  # temporary, a system catalog, or ours
        level = LOCK_LEVEL.get(mode, 0)
        if rel.kind == "S" and level >= _WRITE:
            violation(rel.label)["changes"].append(
                "nextval/setval by this transaction (sequence values are not transactional: ROLLBACK cannot undo it)"
            )
        elif rel.kind == "f" and level >= _WRITE:
            violation(rel.label)["changes"].append("written through a foreign table: on another server, outside this transaction")
        elif level >= _DDL:
            violation(rel.label)["changes"].append(f"locked for DDL ({mode})")
        elif level == _WRITE and relid not in counted and relid not in cascaded:
            violation(rel.label)["changes"].append(
                "a write statement ran on it (ROW EXCLUSIVE lock) but no row was counted: the counters cannot vouch for it"
            )
    for relid, rel in sorted(end.relations.items(), key=lambda kv: (kv[1].schema, kv[1].name)):
        if relid in allowed or rel.kind not in ("r", "p", "m", "f"):
            continue
        result.checked += 1
        ins, upd, dele = _written(start, end, relid)
        result.rows.append({"table": rel.label, "inserted": ins, "updated": upd, "deleted": dele, "changes": "; ".join(catalog.get(relid, []))})
    result.violations = sorted(found.values(), key=lambda v: v["table"])
    return result
