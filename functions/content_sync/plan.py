"""What a content sync may touch, resolved against both databases.

``build_plan`` turns the ``[content_sync]`` config into a ``SyncPlan``:
the content tables in FK order (parents first), for each one the columns
that are compared and written (the same list, in the same order, on both
sides), the key rows are matched on, schema drift, identity columns and
sequences; plus the protected set (every table of the target that is not
content). Every config mistake becomes one ``ConfigError`` line before any
row is read, so a bad config never touches anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from safesync.shared import db
from safesync.shared.config import ContentSyncSection
from safesync.shared.db import Column, ForeignKey, TableRef
from safesync.shared.errors import ConfigError

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


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
class TableSpec:
    """One content table as the diff and the writer see it.

    ``key`` is what rows are matched on (today the primary key; a natural
    key such as ``match_on`` plugs in here). ``columns`` are compared and
    written: the non-generated columns both sides share with the same type,
    in source order. Text-like key columns are compared in "C" (byte) order
    so two servers with different locales still agree on key ranges.
    """

    table: TableRef
    key: tuple[str, ...]
    key_types: tuple[str, ...]
    key_collatable: tuple[bool, ...]
    columns: tuple[str, ...]
    column_types: tuple[str, ...]  # format_type of each of ``columns``
    primary_key: tuple[str, ...]
    native_hash: bool = True  # both servers >= 14: hash_record_extended (see rowhash)
    identity_always: frozenset[str] = frozenset()  # target columns GENERATED ALWAYS AS IDENTITY
    sequences: tuple[tuple[str, str], ...] = ()  # (column, sequence) owned in the target
    drift: Drift = field(default_factory=Drift)

    @property
    def name(self) -> str:
        return self.table.short

    @property
    def arithmetic(self) -> str | None:
        """'int' or 'uuid' when key ranges can be split by arithmetic on the
        key value (one integer or uuid column); None: split by quantiles."""
        if len(self.key) != 1:
            return None
        if self.key_types[0] in INTEGER_TYPES:
            return "int"
        if self.key_types[0] == "uuid":
            return "uuid"
        return None

    @property
    def update_columns(self) -> tuple[str, ...]:
        """Columns an upsert may SET: not the key, never an ALWAYS identity."""
        return tuple(c for c in self.columns if c not in self.primary_key and c not in self.identity_always)


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


def _sequences(conn: psycopg.Connection, table: TableRef, cols: list[Column]) -> tuple[tuple[str, str], ...]:
    found = []
    qualified = table.ident.as_string(conn)
    for col in cols:
        seq = conn.execute("select pg_get_serial_sequence(%s, %s)", [qualified, col.name]).fetchone()[0]
        if seq:
            found.append((col.name, seq))
    return tuple(found)


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
    return Drift(missing, extra, tuple(retyped))


def table_spec(
    src: psycopg.Connection, tgt: psycopg.Connection, table: TableRef, source: str, target: str, *, native_hash: bool = True
) -> TableSpec:
    """Resolve one content table on both sides (ConfigError if it is unusable)."""
    for conn, side in ((src, source), (tgt, target)):
        if not db.table_exists(conn, table):
            raise ConfigError(f"content_sync.tables: {table} does not exist in database {side!r}")
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
    columns = tuple(
        c.name
        for c in src_cols
        if not c.generated and c.name in tgt_by_name and tgt_by_name[c.name].type == c.type and not tgt_by_name[c.name].generated
    )
    src_types = {c.name: c.type for c in src_cols}
    key = tuple(src_pk)
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
        sequences=_sequences(tgt, table, tgt_cols),
        drift=drift,
    )


def same_database(src: psycopg.Connection, tgt: psycopg.Connection) -> bool:
    """True when both connections reach the same database of the same
    server (two config names pointing at one database)."""
    pid = src.execute("select pg_backend_pid()").fetchone()[0]
    marker = src.info.parameter_status("application_name")
    row = tgt.execute(
        "select count(*) from pg_stat_activity where pid = %s and application_name = %s and datname = current_database()",
        [pid, marker],
    ).fetchone()
    return bool(row[0])


def build_plan(section: ContentSyncSection, src: psycopg.Connection, tgt: psycopg.Connection) -> SyncPlan:
    if not section.tables:
        raise ConfigError("content_sync.tables is empty: name the content tables a sync may write")
    content = [TableRef.parse(t) for t in section.tables]
    listed = [TableRef.parse(t) for t in section.protected]
    both = sorted(set(content) & set(listed))
    if both:
        raise ConfigError(f"content_sync: {', '.join(map(str, both))} listed as both content and protected")
    if len(set(content)) != len(content):
        raise ConfigError("content_sync.tables lists a table twice")
    if same_database(src, tgt):
        raise ConfigError(
            f"content_sync: source {section.source!r} and target {section.target!r} are the same database"
        )
    for table in listed:
        if not db.table_exists(tgt, table):
            raise ConfigError(f"content_sync.protected: {table} does not exist in database {section.target!r}")
    native = min(db.server_version(src), db.server_version(tgt)) >= 140000  # hash_record_extended
    specs = {t: table_spec(src, tgt, t, section.source, section.target, native_hash=native) for t in content}
    fks = db.foreign_keys(tgt)
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

