"""What a content sync may touch, resolved against both databases.

``build_plan`` turns the ``[content_sync]`` config into a ``SyncPlan``:
the content tables in FK order (parents first), for each one the columns
that are compared and written (the same list, in the same order, on both
sides), the key rows are matched on, schema drift, identity columns and
sequences; plus the protected set (every table of the target that is not
content). Every config mistake becomes one ``ConfigError`` line before any
row is read, so a bad config never touches anything.

``[content_sync.options.<table>] match_on = ["slug"]`` matches a table's
rows by a natural key instead of the primary key (ids may differ between
environments). Its primary-key columns are then neither compared nor
written: an updated row keeps the target's id, a new row gets one from the
target's default (sequence or identity). FK columns of other content
tables that point at such a table's ids are *translated*: compared and
staged as the parent's natural key, written back as the target parent's
id (``Translation``). The natural key must be NOT NULL and have a plain
unique index on both sides, so rows match one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import psycopg
from psycopg import sql

from safesync.shared import db
from safesync.shared.config import ContentSyncSection
from safesync.shared.db import Column, ForeignKey, TableRef
from safesync.shared.errors import ConfigError
from safesync.shared.rowhash import TableShape


@dataclass(frozen=True)
class Drift:
    """Columns that differ between source and target (by name and type)."""

    missing: tuple[str, ...] = ()  # in the source, not in the target
    extra: tuple[str, ...] = ()  # in the target, not in the source
    retyped: tuple[str, ...] = ()  # "col: source type -> target type"
    key: str | None = None  # primary keys differ

    @property
    def any(self) -> bool:
        return bool(self.missing or self.extra or self.retyped or self.key)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append("missing in target: " + ", ".join(self.missing))
        if self.extra:
            parts.append("only in target: " + ", ".join(self.extra))
        if self.retyped:
            parts.append("retyped: " + ", ".join(self.retyped))
        if self.key:
            parts.append(self.key)
        return "; ".join(parts)


@dataclass(frozen=True)
class Translation:
    """An FK column of a content table that holds ids of a table matched on
    a natural key: ids differ between environments, so the column is
    compared and staged as the parent's natural key (text) and written as
    the id the target's parent row has."""

    column: str
    parent: TableRef
    parent_column: str  # the referenced column (the parent's id)
    parent_key: tuple[str, ...]  # the parent's match_on columns
    parent_key_types: tuple[str, ...]


def parent_key_text(tr: Translation, alias: str) -> sql.Composable:
    """The parent's natural key as one text value (NULL when no row matched)."""
    cols = [sql.Identifier(alias, k) for k in tr.parent_key]
    if len(cols) == 1:
        return sql.SQL("{}::text").format(cols[0])
    return sql.SQL("case when {} is null then null else row({})::text end").format(cols[0], sql.SQL(", ").join(cols))


@dataclass(frozen=True)
class TableSpec(TableShape):
    """One content table as the diff and the writer see it: the engine's
    ``TableShape`` (``shared.rowhash``) plus what the writer needs.

    ``key`` is what rows are matched on: the primary key, or the natural
    key ``match_on`` names. ``columns`` are compared and written: the
    non-generated columns both sides share with the same type, in source
    order (without the primary key when rows are matched on a natural key).
    ``column_types`` says how each is hashed: a translated FK column is the
    parent's natural key as text. Text-like key columns are compared in "C"
    (byte) order so two servers with different locales still agree on key
    ranges.
    """

    primary_key: tuple[str, ...] = ()
    identity_always: frozenset[str] = frozenset()  # target columns GENERATED ALWAYS AS IDENTITY
    sequences: tuple[tuple[str, str], ...] = ()  # (column, sequence) each column draws from in the target
    # the columns of ``sequences`` that hold the values handed out (a numeric type): a sync moves their
    # sequences past the synced ids; a column that only uses them in an expression ('SKU-' || nextval(...))
    # holds no number a sequence could be compared with
    sequence_holders: frozenset[str] = frozenset()
    drift: Drift = field(default_factory=Drift)
    match_on: tuple[str, ...] = ()  # natural key (empty: rows matched on the primary key)
    translations: tuple[Translation, ...] = ()
    on_conflict: str = "fail"  # "source" | "target" | "fail"

    @property
    def name(self) -> str:
        return self.table.short

    def translation(self, column: str) -> Translation | None:
        return next((t for t in self.translations if t.column == column), None)

    @property
    def signature(self) -> dict:
        """What a row hash of this table depends on: a ledger recorded under
        another signature cannot be compared with today's hashes."""
        return {
            "key": list(self.key),
            "columns": [f"{c} {t}" for c, t in zip(self.columns, self.column_types)],
            "translations": [f"{t.column}->{t.parent}({', '.join(t.parent_key)})" for t in self.translations],
            "native_hash": self.native_hash,
        }

    def from_item(self, alias: str = "t") -> sql.Composable:
        """The table's rows as compared: the table aliased ``alias``, or a
        subquery (flattened by the planner, so key-range predicates still use
        the table's indexes) whose translated FK columns hold the parent's
        natural key."""
        if not self.translations:
            return super().from_item(alias)
        needed = list(dict.fromkeys([*self.key, *self.columns]))
        select, joins = self.translated(
            needed, "r", on=lambda tr, p, col: sql.SQL("{} = {}").format(sql.Identifier(p, tr.parent_column), col), value=parent_key_text
        )
        return sql.SQL("(select {} from {} as r{}) as {}").format(sql.SQL(", ").join(select), self.table.ident, joins, sql.Identifier(alias))

    def translated(
        self,
        columns: Sequence[str],
        row: str,
        on: Callable[[Translation, str, sql.Identifier], sql.Composable],
        value: Callable[[Translation, str], sql.Composable],
    ) -> tuple[list[sql.Composable], sql.Composable]:
        """A select list of ``columns`` of the rows aliased ``row`` and the
        LEFT JOINs it needs, each translated FK column replaced by ``value``
        read from its parent row (aliased ``p0``, ``p1``…, joined ``on``
        the column): the one shape both directions of a translation take —
        id to natural key when comparing, natural key to id when writing."""
        select: list[sql.Composable] = []
        joins: list[sql.Composable] = []
        for col in columns:
            tr = self.translation(col)
            if tr is None:
                select.append(sql.Identifier(row, col))
                continue
            parent = f"p{len(joins)}"
            joins.append(
                sql.SQL(" left join {} as {} on {}").format(tr.parent.ident, sql.Identifier(parent), on(tr, parent, sql.Identifier(row, col)))
            )
            select.append(sql.SQL("{} as {}").format(value(tr, parent), sql.Identifier(col)))
        return select, sql.Composed(joins)

    @property
    def update_columns(self) -> tuple[str, ...]:
        """Columns an upsert may SET: not the keys, never an ALWAYS identity."""
        return tuple(c for c in self.columns if c not in self.primary_key and c not in self.key and c not in self.identity_always)


@dataclass(frozen=True)
class SyncPlan:
    source: str
    target: str
    tables: tuple[TableSpec, ...]  # FK order, parents first
    protected_listed: tuple[TableRef, ...]
    protected_all: tuple[TableRef, ...]  # every target table that is not content
    target_fks: tuple[ForeignKey, ...]
    delete_missing: bool

    @property
    def content(self) -> frozenset[TableRef]:
        return frozenset(s.table for s in self.tables)

    def referencing(self, table: TableRef) -> list[ForeignKey]:
        """FKs of the target that point at ``table``."""
        return [fk for fk in self.target_fks if fk.ref_table == table]


def _collatable(conn: psycopg.Connection, table: TableRef, names: tuple[str, ...]) -> tuple[bool, ...]:
    rows = dict(
        conn.execute(
            """
            select a.attname, a.attcollation <> 0
            from pg_attribute a join pg_class c on c.oid = a.attrelid
            join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped
            """,
            [table.schema, table.name],
        ).fetchall()
    )
    return tuple(bool(rows.get(n)) for n in names)


# Every sequence a column draws from: its DEFAULT's nextval() (owned by the
# column or not — pagila's, many hand-written and Prisma schemas' are not),
# an identity column's, a serial's.
SEQUENCES_SQL = """
    select a.attname, quote_ident(sn.nspname) || '.' || quote_ident(s.relname), t.typcategory = 'N'
    from pg_attribute a join pg_type t on t.oid = a.atttypid
    join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    join pg_depend dep on dep.classid = 'pg_attrdef'::regclass and dep.objid = d.oid
                      and dep.refclassid = 'pg_class'::regclass
    join pg_class s on s.oid = dep.refobjid and s.relkind = 'S'
    join pg_namespace sn on sn.oid = s.relnamespace
    where a.attrelid = %(table)s::regclass and a.attnum > 0 and not a.attisdropped
    union
    select a.attname, pg_get_serial_sequence(%(table)s::text, a.attname::text), t.typcategory = 'N'
    from pg_attribute a join pg_type t on t.oid = a.atttypid
    where a.attrelid = %(table)s::regclass and a.attnum > 0 and not a.attisdropped
      and pg_get_serial_sequence(%(table)s::text, a.attname::text) is not null
    order by 1, 2
"""


def _sequences(conn: psycopg.Connection, table: TableRef, cols: list[Column]) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
    """(column, sequence) for every sequence the table's columns draw from,
    and the columns among them of a numeric type (``TableSpec.sequence_holders``;
    a domain has its base type's category)."""
    names = {c.name for c in cols}
    rows = [r for r in conn.execute(SEQUENCES_SQL, {"table": table.ident.as_string(conn)}).fetchall() if r[0] in names]
    return tuple((column, seq) for column, seq, _ in rows), frozenset(column for column, _, numeric in rows if numeric)


def _drift(src_cols: list[Column], tgt_cols: list[Column]) -> Drift:
    src = {c.name: c for c in src_cols}
    tgt = {c.name: c for c in tgt_cols}
    missing = tuple(f"{n} {src[n].type}" for n in src if n not in tgt)
    extra = tuple(f"{n} {tgt[n].type}" for n in tgt if n not in src)
    retyped = []
    for n in src:
        if n in tgt:
            a, b = src[n], tgt[n]
            if a.type != b.type:
                retyped.append(f"{n}: {a.type} -> {b.type}")
            elif a.generated != b.generated:
                retyped.append(f"{n}: {'generated' if a.generated else 'plain'} -> {'generated' if b.generated else 'plain'}")
            elif a.generated and a.default != b.default:
                # never compared nor written (each side computes its own), so a different
                # expression would leave the column differing under an "identical" compare
                retyped.append(f"{n}: generated always as ({a.default}) -> generated always as ({b.default})")
    return Drift(missing, extra, tuple(retyped))


def _unique_index_on(conn: psycopg.Connection, table: TableRef, cols: tuple[str, ...]) -> bool:
    """A valid, immediate, non-partial unique index (or constraint) on
    exactly ``cols``: the natural key matches rows one to one."""
    return bool(
        conn.execute(
            """
            select exists (
              select from pg_index i
              join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = %s and c.relname = %s and i.indisunique and i.indisvalid and i.indimmediate
                and i.indpred is null and i.indexprs is null
                and (select array_agg(a.attname::text order by a.attname) from pg_attribute a
                     where a.attrelid = i.indrelid and a.attnum = any(i.indkey)) = %s::text[]
                and i.indnkeyatts = cardinality(%s::text[]))
            """,
            [table.schema, table.name, sorted(cols), list(cols)],
        ).fetchone()[0]
    )


def _check_match_on(
    src: psycopg.Connection, tgt: psycopg.Connection, table: TableRef, match_on: tuple[str, ...], sides: dict, pk: list[str], tgt_cols: list[Column]
) -> None:
    where = f"content_sync.options.{table.short}.match_on"
    if not match_on or len(set(match_on)) != len(match_on):
        raise ConfigError(f"{where}: name one or more distinct columns")
    for conn, side in ((src, sides["source"]), (tgt, sides["target"])):
        cols = {c.name: c for c in db.columns(conn, table)}
        for col in match_on:
            if col not in cols:
                raise ConfigError(f"{where}: column {col!r} does not exist in {table} in database {side!r}")
            if not cols[col].not_null:
                raise ConfigError(f"{where}: {table}.{col} must be NOT NULL in database {side!r} (a NULL natural key matches nothing)")
        if not _unique_index_on(conn, table, match_on):
            raise ConfigError(
                f"{where}: ({', '.join(match_on)}) is not unique in {table} in database {side!r}; "
                "add a unique index or constraint on exactly these columns (rows must match one to one)"
            )
    by_name = {c.name: c for c in tgt_cols}
    for col in pk:
        if col in match_on:
            continue
        c = by_name[col]
        if not c.identity and c.default is None:
            raise ConfigError(
                f"{where}: primary-key column {table}.{col} has no default in database {sides['target']!r}; "
                "rows matched on a natural key get their id from the target (add a sequence or identity)"
            )


def table_spec(
    src: psycopg.Connection,
    tgt: psycopg.Connection,
    table: TableRef,
    source: str,
    target: str,
    *,
    native_hash: bool = True,
    match_on: tuple[str, ...] = (),
    on_conflict: str = "fail",
    ignore_columns: tuple[str, ...] = (),
) -> TableSpec:
    """Resolve one content table on both sides (ConfigError if it is unusable)."""
    for conn, side in ((src, source), (tgt, target)):
        kind = db.relation_kind(conn, table)
        if kind is None:
            raise ConfigError(f"content_sync.tables: {table} does not exist in database {side!r}")
        if kind not in ("table", "partitioned table"):
            hint = "list the partitioned table itself" if kind.startswith("partition of") else "content sync writes tables: list the table(s) behind it"
            raise ConfigError(f"content_sync.tables: {table} is a {kind} in database {side!r}, not a table; {hint}")
    src_pk, tgt_pk = db.primary_key(src, table), db.primary_key(tgt, table)
    for pk, side in ((src_pk, source), (tgt_pk, target)):
        if not pk:
            raise ConfigError(
                f"content_sync.tables: {table} has no primary key in database {side!r}; "
                "rows cannot be matched safely (add a primary key)"
            )
    src_cols, tgt_cols = db.columns(src, table), db.columns(tgt, table)
    drift = _drift(src_cols, tgt_cols)
    if src_pk != tgt_pk:
        drift = Drift(drift.missing, drift.extra, drift.retyped, f"primary key ({', '.join(src_pk)}) -> ({', '.join(tgt_pk)})")
    tgt_by_name = {c.name: c for c in tgt_cols}
    if match_on and set(match_on) == set(tgt_pk):
        match_on = ()  # the primary key itself: plain matching
    if match_on:
        _check_match_on(src, tgt, table, match_on, {"source": source, "target": target}, tgt_pk, tgt_cols)
    unknown = [c for c in ignore_columns if c not in {x.name for x in src_cols}]
    keyed = [c for c in ignore_columns if c in src_pk or c in match_on]
    if unknown or keyed:
        what = f"no column {', '.join(unknown)} in {table}" if unknown else f"{', '.join(keyed)} is part of the key rows are matched on"
        raise ConfigError(f"content_sync.options.{table.short}.ignore_columns: {what}")
    columns = tuple(
        c.name
        for c in src_cols
        if not c.generated
        and c.name not in ignore_columns
        and c.name in tgt_by_name
        and tgt_by_name[c.name].type == c.type
        and not tgt_by_name[c.name].generated
        and not (match_on and c.name in tgt_pk and c.name not in match_on)  # ids differ between environments
    )
    src_types = {c.name: c.type for c in src_cols}
    key = tuple(match_on) if match_on else tuple(src_pk)
    sequences, holders = _sequences(tgt, table, tgt_cols)
    return TableSpec(
        table=table,
        key=key,
        key_types=tuple(src_types[k] for k in key),
        key_collatable=_collatable(src, table, key),
        columns=columns,
        column_types=tuple(src_types[c] for c in columns),
        primary_key=tuple(tgt_pk),
        native_hash=native_hash,
        identity_always=frozenset(c.name for c in tgt_cols if c.identity == "a"),
        sequences=sequences,
        sequence_holders=holders,
        drift=drift,
        match_on=tuple(match_on),
        on_conflict=on_conflict,
    )


def _reaches(start: TableRef, goal: TableRef, fks: list[ForeignKey], content: set[TableRef]) -> bool:
    """True when ``start`` references ``goal`` through content-table FKs."""
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for fk in fks:
            if fk.table == node and fk.ref_table in content and fk.ref_table not in seen:
                if fk.ref_table == goal:
                    return True
                seen.add(fk.ref_table)
                todo.append(fk.ref_table)
    return False


def _translations(specs: dict[TableRef, TableSpec], fks: list[ForeignKey]) -> dict[TableRef, TableSpec]:
    """Attach a ``Translation`` to every content FK column that points at the
    ids of a table matched on a natural key; refuse what cannot be mapped."""
    content = set(specs)
    out = dict(specs)
    for table, spec in specs.items():
        found = []
        for fk in fks:
            parent = specs.get(fk.ref_table)
            if fk.table != table or parent is None or not parent.match_on:
                continue
            if set(fk.ref_columns) == set(parent.match_on):
                continue  # it already holds the natural key
            where = f"content_sync: {table.short}.{', '.join(fk.columns)} references {parent.name}, which is matched on ({', '.join(parent.match_on)})"
            if len(fk.columns) != 1:
                raise ConfigError(f"{where}: a multi-column foreign key into a table matched on a natural key cannot be translated")
            if fk.table == fk.ref_table or _reaches(fk.ref_table, table, fks, content):
                raise ConfigError(f"{where}: the reference is part of a cycle, so parents cannot be written first; match these tables on their primary keys")
            column = fk.columns[0]
            if column in spec.key:
                raise ConfigError(f"{where}: {column} is part of the match key of {table.short}; match on columns that do not reference remapped ids")
            if column not in spec.columns:
                continue  # not compared (drifted): drift refuses the sync anyway
            found.append(
                Translation(column, parent.table, fk.ref_columns[0], parent.match_on, tuple(parent.key_types))
            )
        if found:
            types = tuple("text" if any(t.column == c for t in found) else ty for c, ty in zip(spec.columns, spec.column_types))
            out[table] = replace(spec, translations=tuple(found), column_types=types)
    return out


_LINEAGE = """
with recursive rel as (
  select c.oid, n.nspname, c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
), up(start, node, partition) as (
  select i.inhrelid, i.inhparent, c.relispartition from pg_inherits i join pg_class c on c.oid = i.inhrelid
  union
  select up.start, i.inhparent, up.partition and c.relispartition from up join pg_inherits i on i.inhrelid = up.node join pg_class c on c.oid = i.inhrelid
)
select s.nspname, s.relname, s.relkind, a.nspname, a.relname, a.relkind, up.partition
from up join rel s on s.oid = up.start join rel a on a.oid = up.node
"""


def check_relations(conn: psycopg.Connection, content: list[TableRef], listed: list[TableRef], target: str) -> None:
    """ConfigError unless every listed protected table is a real table of
    the target, and no content table shares rows with a protected one
    through partitioning or inheritance, in either direction (content
    tables' own kinds are ``table_spec``'s to check).

    A content table's own partitions are content (its rows are routed to
    them); listing one as protected, a content table that is a partition or
    child of a non-content table, a non-content table inheriting from a
    content table (its rows appear in the parent's), or a foreign-table
    partition (its rows live on another server) are errors naming both.
    Views and foreign tables are never protected-table stand-ins: the proof
    watches the tables that hold the rows."""
    for table in listed:
        kind = db.relation_kind(conn, table)
        if kind not in ("table", "partitioned table") and not (kind or "").startswith("partition of"):
            raise ConfigError(
                f"content_sync.protected: {table} is a {kind} in database {target!r}, not a table: views and foreign tables "
                "are never protected-table stand-ins — list the table(s) that hold the rows"
            )
    content_set, listed_set = set(content), set(listed)
    for cs, cr, ck, ps, pr, _, partition in conn.execute(_LINEAGE):
        child, parent = TableRef(cs, cr), TableRef(ps, pr)
        how = "a partition of" if partition else "an inheritance child of"
        if child in content_set and parent not in content_set:
            raise ConfigError(
                f"content_sync: content table {child} is {how} {parent}, which is protected: the sync would write {parent}'s rows; "
                f"list {parent} in content_sync.tables or sync another table"
            )
        if parent in content_set and child in content_set and not partition:
            raise ConfigError(
                f"content_sync: content table {child} is an inheritance child of content table {parent}: reading {parent} "
                f"includes {child}'s rows, so a sync would copy them into {parent} too (duplicate keys a compare cannot see); "
                "sync only one of them, or stop the inheritance"
            )
        if parent in content_set and child not in content_set:
            if child in listed_set:
                raise ConfigError(f"content_sync: protected table {child} is {how} content table {parent}: a sync of {parent} writes its rows")
            if not partition:
                raise ConfigError(
                    f"content_sync: {child} inherits from content table {parent} but is not content: its rows appear in {parent} "
                    "and a sync would overwrite them; list it in content_sync.tables, or stop the inheritance"
                )
            if ck == "f":
                raise ConfigError(f"content_sync: partition {child} of content table {parent} is a foreign table: its rows live on another server")


def check_source_lineage(conn: psycopg.Connection, content: list[TableRef], source: str) -> None:
    """ConfigError when a content table has an inheritance child (not a
    partition) in the source: reading the parent there includes the child's
    rows, so the sync would push rows into the target's parent that the
    source's parent itself does not hold, and no compare would show it."""
    content_set = set(content)
    for cs, cr, _, ps, pr, _, partition in conn.execute(_LINEAGE):
        parent = TableRef(ps, pr)
        if parent in content_set and not partition:
            raise ConfigError(
                f"content_sync: {TableRef(cs, cr)} inherits from content table {parent} in database {source!r}: reading {parent} "
                "there includes its rows, so a sync would copy them into the target's table; stop the inheritance"
            )


def build_plan(section: ContentSyncSection, src: psycopg.Connection, tgt: psycopg.Connection) -> SyncPlan:
    if not section.tables:
        raise ConfigError("content_sync.tables is empty: name the content tables a sync may write")
    content = [TableRef.parse(t) for t in section.tables]
    listed = [TableRef.parse(t) for t in section.protected]  # twice, or both: the config refuses that
    for table in listed:
        if not db.table_exists(tgt, table):
            raise ConfigError(f"content_sync.protected: {table} does not exist in database {section.target!r}")
    check_relations(tgt, content, listed, section.target)
    check_source_lineage(src, content, section.source)
    native = min(db.server_version(src), db.server_version(tgt)) >= 140000  # hash_record_extended
    options = {TableRef.parse(name): opts for name, opts in section.options.items()}
    specs = {
        t: table_spec(
            src,
            tgt,
            t,
            section.source,
            section.target,
            native_hash=native,
            match_on=tuple(options[t].match_on or ()) if t in options else (),
            on_conflict=(options[t].on_conflict if t in options else None) or section.on_conflict,
            ignore_columns=tuple(options[t].ignore_columns or ()) if t in options else (),
        )
        for t in content
    }
    fks = db.foreign_keys(tgt)
    specs = _translations(specs, fks)
    ordered = db.fk_order(content, fks)
    everything = db.list_tables(tgt)
    return SyncPlan(
        source=section.source,
        target=section.target,
        tables=tuple(specs[t] for t in ordered),
        protected_listed=tuple(listed),
        protected_all=tuple(t for t in everything if t not in specs),
        target_fks=tuple(fks),
        delete_missing=section.delete_missing,
    )

