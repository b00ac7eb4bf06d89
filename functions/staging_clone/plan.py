"""What a clone will do, and whether it is safe: read-only, before anything
is written.

``plan_clone(source, target, options)`` inspects both databases (the source
through the snapshot the dump will use) and raises ``Refused`` when the
clone could not be exact or would harm objects outside the cloned schemas:
a referenced role missing from the target's cluster, an object outside the
schemas that depends on one inside (the drop would cascade to it), a table
inheriting across the schemas' boundary (partitions included), an
extension the target has in a different schema, a mask that cannot apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import psycopg
from psycopg import sql

from safesync.shared.db import TableRef, columns, list_tables
from safesync.shared.errors import Refused

from .carry import Carry, plan_carry

# A text column (format_type: citext is schema-qualified, the plan's
# search_path being empty), and its length limit if it has one.
TEXT_TYPE = re.compile(r"^(?:text|character varying|character|(?:.+\.)?citext)(?:\((\d+)\))?$")
HASH_CHARS = 32  # an md5 in hex, before the mask's suffix


@dataclass(frozen=True)
class Mask:
    """Per-column masking applied inside the clone transaction."""

    table: TableRef
    column: str
    strategy: str  # null | fixed | hash
    value: str | None = None


@dataclass(frozen=True)
class CloneOptions:
    schemas: tuple[str, ...]
    exclude_table_data: tuple[TableRef, ...] = ()
    masks: tuple[Mask, ...] = ()
    lock_timeout: str = "60s"  # waiting for the target's locks (an app's long transaction)


@dataclass(frozen=True)
class DumpScope:
    """What pg_dump is asked for beyond the schemas: the extensions living in
    them (part of the dump) and the tables whose data is left out."""

    extensions: tuple[str, ...]
    without_data: tuple[TableRef, ...]


def dump_scope(source: psycopg.Connection, options: CloneOptions) -> DumpScope:
    """The dump's scope, from the source's snapshot alone: known before the
    rest of the plan, so the clone starts pg_dump (whose own catalog reads
    take longer than our plan on a small database) while it plans."""
    schemas = list(options.schemas)
    extensions = source.execute(
        "select e.extname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where n.nspname = any(%s) order by 1",
        [schemas],
    ).fetchall()
    tables = set(list_tables(source, schemas))
    return DumpScope(tuple(r[0] for r in extensions), tuple(_without_data(source, [t for t in options.exclude_table_data if t in tables])))


@dataclass
class ClonePlan:
    source_tables: list[TableRef]
    target_tables: list[TableRef]
    source_relations: list[str]  # every relation the target must hold afterwards (regclass text)
    scope: DumpScope  # what pg_dump is asked for: the run's dump was started with it
    create_extensions: list[tuple[str, str]]  # (name, schema) the target lacks outside the schemas
    schema_grants: dict[str, list[tuple[str, str, bool]]]  # schema -> (grantee|'PUBLIC', privilege, grantable)
    carry: Carry = field(default_factory=Carry)
    # (schema, name) of the plain tables (partitions too) the dump creates in
    # the clone's own transaction, so their COPY may FREEZE; never an
    # extension's table (a kept extension's config tables stay as they are).
    freezable: set[tuple[str, str]] = field(default_factory=set)
    mask_types: dict[tuple[TableRef, str], str] = field(default_factory=dict)
    # what the proof leaves out: the columns the masks rewrite, per table
    # (a comparison's ``exclude_columns``), and the tables and materialized
    # views whose data it can only count, with why (its ``count_only``)
    masked: dict[TableRef, tuple[str, ...]] = field(default_factory=dict)
    uncompared: dict[TableRef, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def without_data(self) -> tuple[TableRef, ...]:
        """The tables copied without data: those of ``exclude_table_data``
        and their partitions and inheritance children (pg_dump's
        --exclude-table-data excludes the named table's own rows only)."""
        return self.scope.without_data

    @property
    def created(self) -> list[TableRef]:
        return sorted(set(self.source_tables) - set(self.target_tables))

    @property
    def dropped(self) -> list[TableRef]:
        return sorted(set(self.target_tables) - set(self.source_tables))

    @property
    def replaced(self) -> list[TableRef]:
        return sorted(set(self.source_tables) & set(self.target_tables))

    def summary(self) -> dict[str, Any]:
        return {
            "tables_created": [str(t) for t in self.created],
            "tables_dropped": [str(t) for t in self.dropped],
            "tables_replaced": len(self.replaced),
            "extensions_in_schemas": list(self.scope.extensions),
            "extensions_created": [f"{n} (schema {s})" for n, s in self.create_extensions],
            "publication_memberships": [f"{m.publication}: {m.schema}.{m.table}" for m in self.carry.memberships]
            + [f"{p}: tables in schema {s}" for p, s in self.carry.schema_memberships],
            "event_triggers": [t.name for t in self.carry.event_triggers],
            "kept_as_on_target": self.carry.kept,
        }


# The schema an object lives in (NULL: a kind without one, e.g. a cast).
SCHEMA_OF = """case {cls}
    when 'pg_namespace'::regclass then {oid}
    when 'pg_class'::regclass then (select relnamespace from pg_class where oid = {oid})
    when 'pg_proc'::regclass then (select pronamespace from pg_proc where oid = {oid})
    when 'pg_type'::regclass then (select typnamespace from pg_type where oid = {oid})
    when 'pg_constraint'::regclass then (select coalesce(nullif(k.connamespace, 0), c.relnamespace)
                                         from pg_constraint k left join pg_class c on c.oid = k.conrelid where k.oid = {oid})
    when 'pg_trigger'::regclass then (select c.relnamespace from pg_trigger t join pg_class c on c.oid = t.tgrelid where t.oid = {oid})
    when 'pg_policy'::regclass then (select c.relnamespace from pg_policy p join pg_class c on c.oid = p.polrelid where p.oid = {oid})
    when 'pg_rewrite'::regclass then (select c.relnamespace from pg_rewrite r join pg_class c on c.oid = r.ev_class where r.oid = {oid})
    when 'pg_attrdef'::regclass then (select c.relnamespace from pg_attrdef a join pg_class c on c.oid = a.adrelid where a.oid = {oid})
    when 'pg_extension'::regclass then (select extnamespace from pg_extension where oid = {oid})
    when 'pg_statistic_ext'::regclass then (select stxnamespace from pg_statistic_ext where oid = {oid})
    when 'pg_collation'::regclass then (select collnamespace from pg_collation where oid = {oid})
    when 'pg_operator'::regclass then (select oprnamespace from pg_operator where oid = {oid})
    when 'pg_opclass'::regclass then (select opcnamespace from pg_opclass where oid = {oid})
    when 'pg_opfamily'::regclass then (select opfnamespace from pg_opfamily where oid = {oid})
    when 'pg_amop'::regclass then (select f.opfnamespace from pg_amop a join pg_opfamily f on f.oid = a.amopfamily where a.oid = {oid})
    when 'pg_amproc'::regclass then (select f.opfnamespace from pg_amproc a join pg_opfamily f on f.oid = a.amprocfamily where a.oid = {oid})
    when 'pg_ts_config'::regclass then (select cfgnamespace from pg_ts_config where oid = {oid})
    when 'pg_ts_dict'::regclass then (select dictnamespace from pg_ts_dict where oid = {oid})
    when 'pg_conversion'::regclass then (select connamespace from pg_conversion where oid = {oid})
    when 'pg_default_acl'::regclass then (select defaclnamespace from pg_default_acl where oid = {oid})
  end"""

# Objects outside the schemas that depend on objects inside: emptying the
# schemas (DROP … CASCADE) would take them along. Publication memberships
# and event triggers are carried over by the clone itself (``carry``);
# extensions living in the schemas are part of the dump or kept in place;
# default privileges in a schema belong to it.
EXTERNAL_DEPENDENTS = f"""
    with inside as (select oid from pg_namespace where nspname = any(%(schemas)s))
    select distinct pg_describe_object(d.classid, d.objid, 0) as dependent,
                    pg_describe_object(d.refclassid, d.refobjid, 0) as depends_on
    from pg_depend d
    where d.deptype in ('n', 'a')
      and d.classid not in ('pg_publication_rel'::regclass, 'pg_publication_namespace'::regclass, 'pg_event_trigger'::regclass)
      and not exists (select 1 from pg_depend e join pg_extension x on x.oid = e.refobjid
                      where e.classid = d.classid and e.objid = d.objid and e.deptype = 'e'
                        and e.refclassid = 'pg_extension'::regclass and x.extnamespace in (select oid from inside))
      and ({SCHEMA_OF.format(cls='d.refclassid', oid='d.refobjid')}) in (select oid from inside)
      and ({SCHEMA_OF.format(cls='d.classid', oid='d.objid')}) is distinct from ({SCHEMA_OF.format(cls='d.refclassid', oid='d.refobjid')})
      and coalesce(({SCHEMA_OF.format(cls='d.classid', oid='d.objid')}) not in (select oid from inside), true)
    order by 1
"""

# Inheritance (partitions included) across the schemas' boundary: which
# table of the pair is inside, and whether it is a partition.
INHERITANCE_ACROSS = """
    with inside as (select oid from pg_namespace where nspname = any(%(schemas)s))
    select format('%%I.%%I', cn.nspname, c.relname), format('%%I.%%I', pn.nspname, p.relname), c.relispartition, c.relnamespace in (select oid from inside),
           case when c.relnamespace in (select oid from inside) then pn.nspname else cn.nspname end
    from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
    join pg_namespace cn on cn.oid = c.relnamespace join pg_namespace pn on pn.oid = p.relnamespace
    where c.relkind in ('r', 'p', 'f')
      and (c.relnamespace in (select oid from inside)) <> (p.relnamespace in (select oid from inside))
    order by 1, 2
"""


def _inheritance_across(source: psycopg.Connection, target: psycopg.Connection, args: dict[str, Any]) -> list[str]:
    """A clone replaces whole schemas and touches nothing else, so a table
    tied by inheritance to one outside them cannot be cloned exactly: on the
    source, a child inside would be attached to its parent outside (that
    table gains the rows), a child outside would be left out of its parent's
    rows; on the target, dropping a child inside takes its rows out of its
    parent outside. (A parent inside with a child outside on the target is an
    external dependent: ``EXTERNAL_DEPENDENTS``.)"""
    problems = []
    for child, parent, partition, child_inside, outside in source.execute(INHERITANCE_ACROSS, args):
        kind = "a partition" if partition else "an inheritance child"
        if child_inside:
            problems.append(f"{child} is {kind} of {parent}, outside the cloned schemas: cloning it would attach it there (clone schema {outside!r} too)")
        else:
            problems.append(f"{parent} has {kind} outside the cloned schemas, {child}: its rows would not be cloned (clone schema {outside!r} too)")
    for child, parent, partition, child_inside, _ in target.execute(INHERITANCE_ACROSS, args):
        if child_inside:
            kind = "a partition" if partition else "an inheritance child"
            problems.append(f"on the target, {child} is {kind} of {parent}, outside the cloned schemas: replacing it would take its rows out of {parent}")
    return problems


ROLES_REFERENCED = """
    with inside as (select oid from pg_namespace where nspname = any(%(schemas)s)),
    refs(role) as (
        select nspowner from pg_namespace where oid in (select oid from inside)
        union select relowner from pg_class where relnamespace in (select oid from inside)
        union select proowner from pg_proc where pronamespace in (select oid from inside)
        union select typowner from pg_type where typnamespace in (select oid from inside)
        union select (aclexplode(nspacl)).grantee from pg_namespace where oid in (select oid from inside)
        union select (aclexplode(relacl)).grantee from pg_class where relnamespace in (select oid from inside)
        union select (aclexplode(proacl)).grantee from pg_proc where pronamespace in (select oid from inside)
        union select (aclexplode(typacl)).grantee from pg_type where typnamespace in (select oid from inside)
        union select (aclexplode(a.attacl)).grantee from pg_attribute a join pg_class c on c.oid = a.attrelid
              where c.relnamespace in (select oid from inside) and a.attacl is not null
        union select unnest(p.polroles) from pg_policy p join pg_class c on c.oid = p.polrelid
              where c.relnamespace in (select oid from inside)
        union select defaclrole from pg_default_acl where defaclnamespace in (select oid from inside)
        union select (aclexplode(defaclacl)).grantee from pg_default_acl where defaclnamespace in (select oid from inside)
    )
    select distinct r.rolname from refs join pg_roles r on r.oid = refs.role order by 1
"""


# The tables a statement on each seed table also reaches (its partitions
# and inheritance children, all levels): an UPDATE of a masked table
# rewrites their rows too, and a view may read them directly.
DESCENDANTS = """
    with recursive tree(relid, attname) as (
        select m.t::regclass::oid, m.c from unnest(%(tables)s::text[], %(columns)s::text[]) m(t, c)
        union select i.inhrelid, t.attname from tree t join pg_inherits i on i.inhparent = t.relid
    )
    select n.nspname, c.relname, t.attname from tree t join pg_class c on c.oid = t.relid
    join pg_namespace n on n.oid = c.relnamespace order by 1, 2, 3
"""

# Materialized views whose rows derive from a masked column or from a table
# whose data is not copied (any column: NULL), directly or through views and
# materialized views (their rewrite rules' dependencies). Staging refreshes
# them from its own data, so they differ from dev's on purpose (and a
# report of their rows would print dev's real values).
DERIVED_MATVIEWS = """
    with recursive derived(relid) as (
        select r.ev_class from unnest(%(tables)s::text[], %(columns)s::text[]) m(t, c)
        join pg_depend d on d.refclassid = 'pg_class'::regclass and d.refobjid = m.t::regclass and d.classid = 'pg_rewrite'::regclass
        join pg_rewrite r on r.oid = d.objid
        left join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
        where r.ev_class <> d.refobjid and (m.c is null or a.attname = m.c)
        union
        select r.ev_class from derived v
        join pg_depend d on d.refclassid = 'pg_class'::regclass and d.refobjid = v.relid and d.classid = 'pg_rewrite'::regclass
        join pg_rewrite r on r.oid = d.objid
        where r.ev_class <> v.relid
    )
    select n.nspname, c.relname from derived v join pg_class c on c.oid = v.relid join pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'm' order by 1, 2
"""


def _seeded(source: psycopg.Connection, query: str, seeds: list[tuple[TableRef, str | None]]) -> list[tuple]:
    """Rows of ``query`` for (table, column or None) seeds."""
    if not seeds:
        return []
    params = {"tables": [t.ident.as_string(source) for t, _ in seeds], "columns": [c for _, c in seeds]}
    return source.execute(query, params).fetchall()


def _without_data(source: psycopg.Connection, excluded: list[TableRef]) -> list[TableRef]:
    """The ``excluded`` tables and all their descendants (``DESCENDANTS``)."""
    return sorted({TableRef(schema, name) for schema, name, _ in _seeded(source, DESCENDANTS, [(t, None) for t in excluded])})


def _masked_columns(source: psycopg.Connection, options: CloneOptions, without_data: Sequence[TableRef]) -> dict[TableRef, tuple[str, ...]]:
    """The columns the masks rewrite, per table: the masked tables' and
    those of their partitions and inheritance children (``DESCENDANTS``)."""
    out: dict[TableRef, list[str]] = {}
    seeds = [(m.table, m.column) for m in options.masks if m.table not in without_data]
    for schema, name, column in _seeded(source, DESCENDANTS, seeds):
        out.setdefault(TableRef(schema, name), []).append(column)
    return {table: tuple(cols) for table, cols in out.items()}


def _uncompared(source: psycopg.Connection, plan: ClonePlan) -> dict[TableRef, str]:
    """What the proof counts instead of comparing: tables cloned without
    data, and the materialized views derived from those or from masked
    columns (``DERIVED_MATVIEWS``)."""
    out = {t: "structure only: data not copied" for t in plan.without_data}
    seeds = [(t, c) for t, cols in plan.masked.items() for c in cols] + [(t, None) for t in plan.without_data]
    for schema, name in _seeded(source, DERIVED_MATVIEWS, seeds):
        out.setdefault(TableRef(schema, name), "derived from masked or structure-only data: refreshed from staging's own")
    return out


def _refuse(problems: list[str]) -> None:
    if problems:
        raise Refused("staging clone refused: " + "; ".join(problems), {"problems": problems})


def _check_masks(source: psycopg.Connection, options: CloneOptions, tables: set[TableRef], plan: ClonePlan) -> list[str]:
    problems = []
    for mask in options.masks:
        if mask.table not in tables:
            problems.append(f"mask: table {mask.table} is not in the cloned schemas of the source")
            continue
        col = next((c for c in columns(source, mask.table) if c.name == mask.column), None)
        if col is None:
            problems.append(f"mask: column {mask.table}.{mask.column} does not exist")
        elif col.generated:
            problems.append(f"mask: {mask.table}.{mask.column} is a generated column")
        elif mask.strategy == "null" and col.not_null:
            problems.append(f"mask: {mask.table}.{mask.column} is NOT NULL; use strategy fixed or hash")
        elif mask.strategy == "hash" and not (TEXT_TYPE.match(col.type) or col.type == "uuid"):
            problems.append(f"mask: {mask.table}.{mask.column} is {col.type}; hash works on text and uuid columns")
        elif too_long := _too_long(mask, col.type):
            problems.append(f"mask: {mask.table}.{mask.column} is {col.type}: {too_long}")
        elif mask.strategy == "fixed" and (invalid := _invalid_value(source, mask.value, col.type)):
            problems.append(f"mask: value {mask.value!r} for {mask.table}.{mask.column} is not of type {col.type}: {invalid}")
        elif derived := _generated_from(source, mask.table, mask.column):
            problems.append(
                f"mask: generated column(s) {', '.join(f'{mask.table}.{g}' for g in derived)} are computed from "
                f"{mask.table}.{mask.column}: masking it would change them too (and leave dev's value derivable); "
                "mask a column no generated column reads, or drop the generated column in staging's schema"
            )
        elif keys := _foreign_keys_using(source, mask.table, mask.column):
            problems.append(
                f"mask: {mask.table}.{mask.column} is part of foreign key(s) {', '.join(keys)}: masking it would break "
                "the references (mask a column no foreign key uses)"
            )
        elif mask.strategy == "fixed" and (unique := _unique_over(source, mask.table, mask.column)):
            problems.append(
                f"mask: {mask.table}.{mask.column} is in unique index {unique}: one fixed value in every row would "
                "violate it (use strategy hash, which keeps distinct values distinct)"
            )
        else:
            plan.mask_types[(mask.table, mask.column)] = col.type
        if mask.table in plan.without_data:
            plan.warnings.append(f"mask on {mask.table}.{mask.column} has nothing to mask: the table's data is excluded")
    return problems


def _too_long(mask: Mask, col_type: str) -> str | None:
    """Why the mask's values would not fit a length-limited text column."""
    match = TEXT_TYPE.match(col_type)
    if mask.strategy == "null" or match is None or match.group(1) is None:
        return None
    limit = int(match.group(1))
    length = HASH_CHARS + len(mask.value or "") if mask.strategy == "hash" else len(mask.value or "")
    if length <= limit:
        return None
    if mask.strategy == "hash":
        return f"a hash is {HASH_CHARS} characters plus its suffix ({length}), more than {limit}"
    return f"the fixed value is {length} characters, more than {limit}"


def _invalid_value(conn: psycopg.Connection, value: str | None, col_type: str) -> str | None:
    """The server's reason the fixed value cannot be read as the column's
    type (a savepoint: the snapshot transaction survives)."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("select %s::{}").format(sql.SQL(col_type)), [value])
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:  # a domain's CHECK too
        return (exc.diag.message_primary or str(exc)).strip()
    return None


def _foreign_keys_using(conn: psycopg.Connection, table: TableRef, column: str) -> list[str]:
    """Foreign keys that ``column`` is a referencing or a referenced column of."""
    rows = conn.execute(
        """select k.conname || ' (' || k.conrelid::regclass::text || ' → ' || k.confrelid::regclass::text || ')'
           from pg_constraint k join pg_attribute a on a.attrelid = %(t)s::regclass and a.attname = %(c)s
           where k.contype = 'f' and (k.conrelid = a.attrelid and a.attnum = any(k.conkey)
                                      or k.confrelid = a.attrelid and a.attnum = any(k.confkey))
           order by 1""",
        {"t": table.ident.as_string(conn), "c": column},
    )
    return [r[0] for r in rows]


def _unique_over(conn: psycopg.Connection, table: TableRef, column: str) -> str | None:
    """A unique index covering ``column``, when the table has two rows or more
    (one value in every row would violate it)."""
    row = conn.execute(
        """select i.indexrelid::regclass::text from pg_index i join pg_attribute a on a.attrelid = i.indrelid
           where i.indrelid = %(t)s::regclass and i.indisunique and a.attname = %(c)s and a.attnum = any(i.indkey)
           order by 1 limit 1""",
        {"t": table.ident.as_string(conn), "c": column},
    ).fetchone()
    if row is None:
        return None
    rows = conn.execute(sql.SQL("select count(*) from (select from {} limit 2) s").format(table.ident)).fetchone()[0]
    return row[0] if rows > 1 else None


def _rows_pointing_into_excluded(conn: psycopg.Connection, excluded: Sequence[TableRef], tables: set[TableRef]) -> list[str]:
    """Foreign keys from tables cloned with data to a table cloned without
    (``excluded``): their rows would reference rows that are not copied
    (the clone's FK check fails them). Only keys some row actually uses count."""
    found = conn.execute(
        """select k.conname, n.nspname, c.relname, k.confrelid::regclass::text,
                  array(select a.attname::text from unnest(k.conkey) u(attnum) join pg_attribute a
                        on a.attrelid = k.conrelid and a.attnum = u.attnum)
           from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
           where k.contype = 'f' and k.confrelid = any(%s::regclass[]) order by 2, 3, 1""",
        [[t.ident.as_string(conn) for t in excluded]],
    ).fetchall()
    referencing: dict[str, list[str]] = {}
    for name, schema, relname, parent, cols in found:
        child = TableRef(schema, relname)
        if child not in tables or child in excluded:
            continue
        used = sql.SQL(" and ").join(sql.SQL("{} is not null").format(sql.Identifier(c)) for c in cols)
        if conn.execute(sql.SQL("select exists (select from {} where {})").format(child.ident, used)).fetchone()[0]:
            referencing.setdefault(parent, []).append(f"{child} ({name})")
    return [
        f"exclude_table_data: rows of {', '.join(children)} reference {parent}, whose rows are not copied "
        f"(exclude their data too, or copy {parent}'s)"
        for parent, children in referencing.items()
    ]


def _generated_from(conn: psycopg.Connection, table: TableRef, column: str) -> list[str]:
    """Generated columns of ``table`` whose expression reads ``column``."""
    rows = conn.execute(
        """select g.attname from pg_attribute g
           join pg_attrdef d on d.adrelid = g.attrelid and d.adnum = g.attnum
           join pg_depend dep on dep.classid = 'pg_attrdef'::regclass and dep.objid = d.oid
                             and dep.refclassid = 'pg_class'::regclass and dep.refobjid = g.attrelid
           join pg_attribute c on c.attrelid = g.attrelid and c.attnum = dep.refobjsubid
           where g.attrelid = %s::regclass and g.attgenerated <> '' and c.attname = %s order by 1""",
        [table.ident.as_string(conn), column],
    )
    return [r[0] for r in rows]


def plan_clone(source: psycopg.Connection, target: psycopg.Connection, options: CloneOptions, scope: DumpScope | None = None) -> ClonePlan:
    """Inspect both sides; raise ``Refused`` listing every reason the clone
    would not be exact or safe. ``scope``: ``dump_scope``'s, when the
    caller already read it (its dump runs with it)."""
    scope = scope or dump_scope(source, options)
    schemas = list(options.schemas)
    args = {"schemas": schemas}
    problems: list[str] = []
    present = {r[0] for r in source.execute("select nspname from pg_namespace where nspname = any(%s)", [schemas])}
    problems += [f"schema {s!r} does not exist in the source" for s in schemas if s not in present]

    source_tables = list_tables(source, schemas)
    source.execute("select set_config('search_path', '', true)")
    found = source.execute(
        """select c.oid::regclass::text, n.nspname, c.relname, c.relkind = 'r'
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
             and not exists (select 1 from pg_depend e where e.classid = 'pg_class'::regclass
                             and e.objid = c.oid and e.deptype = 'e')
           order by 1""",
        args,
    ).fetchall()
    relations = [r[0] for r in found]
    plan = ClonePlan(
        source_tables=source_tables,
        target_tables=list_tables(target, schemas),
        source_relations=relations,
        scope=scope,
        create_extensions=[],
        schema_grants={},
        freezable={(schema, name) for _, schema, name, plain in found if plain},
    )
    tables = set(source_tables)
    problems += [f"exclude_table_data: {t} is not a table of the source's cloned schemas" for t in options.exclude_table_data if t not in tables]
    problems += _check_masks(source, options, tables, plan)
    problems += _rows_pointing_into_excluded(source, plan.without_data, tables)

    roles = [r[0] for r in source.execute(ROLES_REFERENCED, args)]
    have = {r[0] for r in target.execute("select rolname from pg_roles where rolname = any(%s)", [roles])}
    missing = [r for r in roles if r not in have]
    if missing:
        problems.append(f"role(s) {', '.join(missing)} used by the source do not exist on the target's server (create them first)")

    problems += _inheritance_across(source, target, args)
    dependents = target.execute(EXTERNAL_DEPENDENTS, args).fetchall()
    if dependents:
        shown = [f"{d} (depends on {o})" for d, o in dependents[:10]]
        problems.append(f"objects outside the schemas depend on them and would be dropped: {', '.join(shown)}")

    _plan_extensions(source, target, schemas, plan, problems)
    plan.carry = plan_carry(source, target, [x for x in schemas if x in present], problems)
    for schema, grantee, privilege, grantable in source.execute(
        """select n.nspname, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable
           from pg_namespace n cross join lateral aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
           left join pg_roles r on r.oid = a.grantee
           where n.nspname = any(%(schemas)s) and a.grantee <> n.nspowner order by 1, 2, 3""",
        args,
    ):
        plan.schema_grants.setdefault(schema, []).append((grantee, privilege, grantable))
    _refuse(problems)
    plan.masked = _masked_columns(source, options, plan.without_data)
    plan.uncompared = _uncompared(source, plan)
    return plan


def _plan_extensions(source: psycopg.Connection, target: psycopg.Connection, schemas: list[str], plan: ClonePlan, problems: list[str]) -> None:
    src = source.execute(
        "select e.extname, n.nspname, e.extversion from pg_extension e join pg_namespace n on n.oid = e.extnamespace order by 1"
    ).fetchall()
    dst = {
        name: (schema, version)
        for name, schema, version in target.execute(
            "select e.extname, n.nspname, e.extversion from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
        )
    }
    available = {r[0] for r in target.execute("select name from pg_available_extensions")}
    target_schemas = {r[0] for r in target.execute("select nspname from pg_namespace")}
    for name, schema, version in src:
        if schema in schemas:  # dumped (``dump_scope``)
            if name in dst and dst[name][0] not in schemas:
                problems.append(
                    f"extension {name} is in schema {dst[name][0]} on the target but in {schema} on the source; move it first"
                )
            elif name not in available:
                problems.append(f"extension {name} is not available on the target's server")
        elif name not in dst:
            if name not in available:
                problems.append(f"extension {name} (schema {schema}) is not available on the target's server")
            elif schema not in target_schemas:
                problems.append(f"extension {name} lives in schema {schema}, which the target lacks")
            else:
                plan.create_extensions.append((name, schema))
        elif dst[name][1] != version:
            plan.warnings.append(f"extension {name}: version {version} on the source, {dst[name][1]} on the target")
