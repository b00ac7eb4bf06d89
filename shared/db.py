"""Connections and catalog introspection shared by every job.

Sessions are pinned (TimeZone, DateStyle, extra_float_digits, bytea_output,
IntervalStyle) so that a row's text form — and therefore any hash computed
from it in SQL — is identical on both sides of a comparison.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
import textwrap
from typing import Iterable, Iterator, Sequence

import psycopg
from psycopg import sql

from . import pooler, rowhash
from .errors import ConfigError, DatabaseError
from .log import redact

PINNED_SETTINGS: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}
# Not pinned for equality but for speed: stock servers (Debian, RDS,
# Supabase) have JIT on, and the planner's estimates for catalog queries
# with many sub-selects pass jit_above_cost: compiling them took seconds
# (11 s for the clone's dependency guard on a Supabase database; 0.07 s
# without). Our queries are catalog look-ups and hash scans that gain
# nothing from JIT.
# The rest is pinned as pg_dump pins it, whatever the database or role sets
# for the application (ALTER DATABASE / ROLE … SET, common on hosted
# Postgres): row_security off, so a role subject to a policy gets an error
# instead of silently reading (and comparing, hashing, syncing) fewer rows;
# no statement_timeout or idle_in_transaction_session_timeout, which would
# cancel a compare over a big table or end the session that holds a
# clone's source snapshot while pg_dump reads it; UTF8 to the client, which
# holds every character (a database-level client_encoding = LATIN1 made
# every read of a "€" fail, pg_dump's too). Where a job must not wait
# long it sets its own transaction-local lock_timeout / statement_timeout.
SESSION_OPTIONS = (
    "-c jit=off -c row_security=off -c statement_timeout=0 -c idle_in_transaction_session_timeout=0 -c client_encoding=UTF8"
)
# PostgreSQL 17's transaction_timeout (set for a role or database, it ends
# the session of any transaction older than it: a sync's, a clone's, the
# backup's exporting one) is off too — set after connecting, on 17+ only:
# an older server refuses the whole startup packet for a name it lacks.
SESSION_SETTINGS_17 = {"transaction_timeout": "0"}
OUR_SCHEMA = "safesync"  # safesync's bookkeeping in a target (ledger, deliveries, run records)


def user_schema(column: str = "n.nspname", *, ours: bool = False) -> str:
    """The one SQL condition "``column`` names a user's schema": not
    ``information_schema`` and no ``pg_*`` schema (catalog, toast, temp);
    safesync's own schema only with ``ours`` (a backup dumps it, a catalog
    listing of the user's tables does not count it). Plain SQL without "%",
    so it fits queries with and without parameters; ``column`` is our
    code's text, never user input."""
    condition = f"{column} <> 'information_schema' and {column} !~ '^pg_'"
    return condition if ours else f"{condition} and {column} <> '{OUR_SCHEMA}'"


def may_write(role: str = "current_user", relation: str = "c") -> str:
    """The one SQL condition "``role`` could write ``relation`` (a pg_class
    row)": it, or a role it may become — a membership it does not inherit
    still allows ``SET ROLE`` — has INSERT, UPDATE, DELETE, TRUNCATE or
    TRIGGER on it (a trigger runs its function for whoever writes next),
    INSERT or UPDATE on any of its columns, or owns it (an owner may grant
    itself anything back, ALTER or DROP it). ``role`` is an SQL expression
    (``current_user``, a literal) from our code, never user input."""
    return (
        f"exists (select from pg_roles may_be where pg_has_role({role}, may_be.oid, 'MEMBER')"
        f" and (has_table_privilege(may_be.oid, {relation}.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER')"
        f" or has_any_column_privilege(may_be.oid, {relation}.oid, 'INSERT, UPDATE')"
        f" or pg_has_role(may_be.oid, {relation}.relowner, 'USAGE')))"
    )


def with_url_options(url: str, ours: str) -> str:
    """The startup ``options`` for ``url``: those the URL carries (``?options=-c
    search_path=app``, Neon's ``endpoint=…``) first, then ours, which win for
    any setting both name (later ``-c`` overrides earlier). Passing ours
    alone replaced the URL's, so the application's search_path was gone from
    the migrations safesync runs for it. Raises psycopg's ProgrammingError
    for a malformed URL."""
    theirs = (psycopg.conninfo.conninfo_to_dict(url).get("options") or "").strip()
    return f"{theirs} {ours}" if theirs else ours


def connect(url: str, *, autocommit: bool = False, application_name: str = "safesync", **kwargs) -> psycopg.Connection:
    """Open a connection with pinned session settings, read back to be in
    effect (``_require_pinned``: else ``ConfigError``, naming them), and
    proven a session of its own, not a pooler's transaction slot
    (``pooler.require_own_session``).

    Connection failures become ``DatabaseError`` with the URL's password
    redacted (psycopg's message may echo the DSN).
    """
    ours = " ".join(f"-c {k}={v.replace(' ', '')}" for k, v in PINNED_SETTINGS.items()) + " " + SESSION_OPTIONS
    kwargs.setdefault("connect_timeout", 10)

    def open_as(autocommit: bool) -> psycopg.Connection:
        try:
            options = with_url_options(url, ours)
            return psycopg.connect(url, autocommit=autocommit, application_name=application_name, options=options, **kwargs)
        except psycopg.OperationalError as exc:
            raise pooler.refused_options(str(exc)) or DatabaseError(f"cannot connect to database: {redact(str(exc)).strip()}") from None
        except psycopg.ProgrammingError as exc:  # malformed URL
            raise ConfigError(f"invalid database URL: {redact(str(exc)).strip()}") from None

    conn = open_as(autocommit)
    try:
        _require_pinned(conn)
        pooler.require_own_session(url, conn, lambda: open_as(True))
    except psycopg.Error as exc:  # a pooler's refusal of a statement (statement mode), or the server went away
        conn.close()
        raise pooler.pooled_failure(exc) or DatabaseError(f"cannot use the database connection: {redact(str(exc)).strip()}") from None
    except BaseException:
        conn.close()
        raise
    return conn


# What every session must hold, read back after connecting: the settings
# travel in the startup packet's ``options``, which a pooler may drop
# without failing the connection (PgBouncer's ``ignore_startup_parameters =
# options``) — the database's own settings would then decide whether
# policies silently filter what we read and how values print (and hash).
REQUIRED_SETTINGS = {**PINNED_SETTINGS, "row_security": "off"}


def _require_pinned(conn: psycopg.Connection) -> None:
    names = list(REQUIRED_SETTINGS)
    query = "select " + ", ".join(["pg_catalog.current_setting(%s)"] * len(names))
    values = conn.execute(query, names).fetchone()
    if conn.info.server_version >= 170000:
        for name, value in SESSION_SETTINGS_17.items():
            conn.execute("select pg_catalog.set_config(%s, %s, false)", [name, value])
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()  # keeps the session settings; the caller starts its own transaction (isolation level, snapshot)
    wrong = [
        f"{name} is {value!r}, not {REQUIRED_SETTINGS[name]!r}"
        for name, value in zip(names, values)
        if value.replace(" ", "").lower() != REQUIRED_SETTINGS[name].replace(" ", "").lower()
    ]
    if wrong:
        raise ConfigError(
            f"the database server did not apply safesync's session settings ({'; '.join(wrong)}): a connection pooler "
            "that drops the startup 'options' parameter? Use the database's direct connection (or a pooler mode that passes them)"
        )


@contextmanager
def read_only(conn: psycopg.Connection, timeout: str | None = None) -> Iterator[None]:
    """A READ ONLY transaction, always rolled back, where RLS raises rather
    than filters, and an optional statement timeout."""
    with conn.transaction(force_rollback=True):
        conn.execute("set transaction read only")
        conn.execute("select set_config('row_security', 'off', true)")
        if timeout:
            conn.execute("select set_config('statement_timeout', %s, true)", [timeout])
        yield


@dataclass(frozen=True, order=True)
class TableRef:
    schema: str
    name: str

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> "TableRef":
        schema, _, name = text.rpartition(".")
        return cls(schema or default_schema, name)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def short(self) -> str:
        """``name`` for public tables, ``schema.name`` otherwise."""
        return self.name if self.schema == "public" else str(self)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "character varying(20)", "integer[]"
    not_null: bool
    default: str | None
    identity: str  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    generated: bool  # a STORED generated column: never written


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: TableRef
    columns: tuple[str, ...]
    ref_table: TableRef
    ref_columns: tuple[str, ...]
    on_delete: str  # 'NO ACTION' | 'RESTRICT' | 'CASCADE' | 'SET NULL' | 'SET DEFAULT'
    on_update: str
    validated: bool


_FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def server_version(conn: psycopg.Connection) -> int:
    """``server_version_num`` as an int, e.g. 160004."""
    return conn.info.server_version


def list_tables(conn: psycopg.Connection, schemas: Sequence[str] | None = None) -> list[TableRef]:
    """Ordinary and partitioned tables, each once: a partition is listed
    through its parent when the parent is listed too, else by itself (a
    partition in a listed schema of a parent outside them holds rows no
    listed table reads)."""
    listed = "(%(schemas)s::text[] is null and {cond} or {col} = any(%(schemas)s::text[]))"
    rows = conn.execute(
        f"""
        select n.nspname, c.relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p') and {listed.format(cond=user_schema(), col='n.nspname')}
          and not (c.relispartition and exists (
                select 1 from pg_inherits i join pg_class pc on pc.oid = i.inhparent join pg_namespace pn on pn.oid = pc.relnamespace
                where i.inhrelid = c.oid and {listed.format(cond=user_schema('pn.nspname'), col='pn.nspname')}))
        order by 1, 2
        """,
        {"schemas": list(schemas) if schemas is not None else None},
    ).fetchall()
    return [TableRef(s, n) for s, n in rows]


def relation_kind(conn: psycopg.Connection, table: TableRef) -> str | None:
    """What ``table`` names, in words a message can use: "table",
    "partitioned table", "partition of public.payment", "view",
    "materialized view", "foreign table", "sequence"… or None if nothing."""
    row = conn.execute(
        """select c.relkind::text, (select pn.nspname || '.' || p.relname from pg_inherits i join pg_class p on p.oid = i.inhparent
                                     join pg_namespace pn on pn.oid = p.relnamespace where i.inhrelid = c.oid and c.relispartition)
           from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s and c.relname = %s""",
        [table.schema, table.name],
    ).fetchone()
    if row is None:
        return None
    kind, parent = row
    if parent:
        return f"partition of {parent}"
    return {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table",
            "S": "sequence", "i": "index", "I": "partitioned index", "c": "composite type", "t": "TOAST table"}.get(kind, kind)


def table_exists(conn: psycopg.Connection, table: TableRef) -> bool:
    return conn.execute(
        "select to_regclass(%s) is not null", [sql.Identifier(table.schema, table.name).as_string(conn)]
    ).fetchone()[0]


def columns(conn: psycopg.Connection, table: TableRef) -> list[Column]:
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated <> ''
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        [table.schema, table.name],
    ).fetchall()
    return [Column(n, t, nn, d, i or "", g) for n, t, nn, d, i, g in rows]


def table_shapes(conn: psycopg.Connection, schemas: Sequence[str]) -> dict[TableRef, tuple[list[tuple[str, str, bool]], list[str]]]:
    """(columns in order as (name, format_type, collatable), primary-key
    columns in key order) of every table, partitioned table and materialized
    view of ``schemas`` — one catalog query for all of them instead of two
    per table (a comparison of a few hundred tables paid seconds in round
    trips)."""
    rows = conn.execute(
        """
        select n.nspname, c.relname,
               array(select array[a.attname::text, format_type(a.atttypid, a.atttypmod), (a.attcollation <> 0)::text]
                     from pg_attribute a
                     where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum),
               coalesce((select array(select a.attname::text from unnest(k.conkey) with ordinality u(attnum, ord)
                                      join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.attnum order by u.ord)
                         from pg_constraint k where k.conrelid = c.oid and k.contype = 'p'), '{}')
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p', 'm') and n.nspname = any(%s)
        """,
        [list(schemas)],
    ).fetchall()
    return {TableRef(s, n): ([(a, t, c == "true") for a, t, c in cols], list(pk)) for s, n, cols, pk in rows}


def primary_key(conn: psycopg.Connection, table: TableRef) -> list[str]:
    """Primary-key columns in key order; empty when the table has none."""
    rows = conn.execute(
        """
        select a.attname
        from pg_constraint k
        join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
        cross join lateral unnest(k.conkey) with ordinality as u(attnum, ord)
        join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.attnum
        where k.contype = 'p' and n.nspname = %s and c.relname = %s
        order by u.ord
        """,
        [table.schema, table.name],
    ).fetchall()
    return [r[0] for r in rows]


def foreign_keys(conn: psycopg.Connection, schemas: Sequence[str] | None = None) -> list[ForeignKey]:
    """Every FK whose referencing table is in ``schemas`` (all user schemas if None)."""
    rows = conn.execute(
        f"""
        select k.conname, n.nspname, c.relname,
               array(select a.attname from unnest(k.conkey) with ordinality u(n, o)
                     join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.n order by u.o),
               rn.nspname, rc.relname,
               array(select a.attname from unnest(k.confkey) with ordinality u(n, o)
                     join pg_attribute a on a.attrelid = k.confrelid and a.attnum = u.n order by u.o),
               k.confdeltype::text, k.confupdtype::text, k.convalidated
        from pg_constraint k
        join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
        join pg_class rc on rc.oid = k.confrelid join pg_namespace rn on rn.oid = rc.relnamespace
        where k.contype = 'f' and k.conparentid = 0  -- each FK once: declared on a partition counts, inherited copies do not
          and (%(schemas)s::text[] is null and {user_schema()} or n.nspname = any(%(schemas)s::text[]))
        order by 2, 3, 1
        """,
        {"schemas": list(schemas) if schemas is not None else None},
    ).fetchall()
    return [
        ForeignKey(
            name=r[0],
            table=TableRef(r[1], r[2]),
            columns=tuple(r[3]),
            ref_table=TableRef(r[4], r[5]),
            ref_columns=tuple(r[6]),
            on_delete=_FK_ACTIONS[r[7]],
            on_update=_FK_ACTIONS[r[8]],
            validated=r[9],
        )
        for r in rows
    ]


def fk_order(tables: Iterable[TableRef], fks: Iterable[ForeignKey]) -> list[TableRef]:
    """Parents before children; tables in an FK cycle stay together (in name
    order) at the position of the whole cycle, so the order always exists.

    Tarjan's algorithm yields strongly connected components children-first
    when edges point child -> parent, which is exactly the reverse of what we
    want, so we emit them as found (parents' components complete first).
    """
    nodes = sorted(set(tables))
    present = set(nodes)
    parents: dict[TableRef, set[TableRef]] = defaultdict(set)
    for fk in fks:
        if fk.table in present and fk.ref_table in present and fk.table != fk.ref_table:
            parents[fk.table].add(fk.ref_table)

    index: dict[TableRef, int] = {}
    low: dict[TableRef, int] = {}
    on_stack: set[TableRef] = set()
    stack: list[TableRef] = []
    order: list[TableRef] = []
    counter = 0

    def visit(root: TableRef) -> None:
        nonlocal counter
        # iterative Tarjan: (node, iterator over its parents)
        work = [(root, iter(sorted(parents[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for parent in it:
                if parent not in index:
                    index[parent] = low[parent] = counter
                    counter += 1
                    stack.append(parent)
                    on_stack.add(parent)
                    work.append((parent, iter(sorted(parents[parent]))))
                    advanced = True
                    break
                if parent in on_stack:
                    low[node] = min(low[node], index[parent])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                order.extend(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return order


# "Row-level security would filter this table for the connected role": on,
# and the role neither bypasses it (superuser, BYPASSRLS) nor owns the table
# without FORCE. With our sessions' row_security = off such a table is an
# error to read, never a silently smaller one. ``c`` is pg_class, ``r`` the
# role's pg_roles row.
POLICY_FILTERED = "c.relrowsecurity and not (r.rolbypassrls or r.rolsuper or (pg_has_role(c.relowner, 'USAGE') and not c.relforcerowsecurity))"


def policy_filtered(conn: psycopg.Connection, tables: Iterable[TableRef]) -> list[TableRef]:
    """Those of ``tables`` (partitions included) row-level security would
    filter for the connected role: every comparison of them is refused."""
    wanted = [str(t) for t in tables]
    rows = conn.execute(
        f"""
        select rn.nspname, rt.relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        join pg_class rt on rt.oid = coalesce(pg_partition_root(c.oid), c.oid) join pg_namespace rn on rn.oid = rt.relnamespace
        join pg_roles r on r.rolname = current_user
        where format('%%s.%%s', rn.nspname, rt.relname) = any(%s) and {POLICY_FILTERED}
        order by 1, 2
        """,
        [wanted],
    ).fetchall()
    return list(dict.fromkeys(TableRef(s, n) for s, n in rows))


def writable_tables(conn: psycopg.Connection, content: Iterable[TableRef]) -> list[TableRef]:
    """Tables, views and foreign tables outside ``content`` (and its
    partitions) that the connected role could write (``may_write``).
    safesync's own schema and the system schemas are not counted."""
    rows = conn.execute(
        f"""
        select n.nspname, c.relname, rn.nspname, r.relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        join pg_class r on r.oid = coalesce(pg_partition_root(c.oid), c.oid) join pg_namespace rn on rn.oid = r.relnamespace
        where c.relkind in ('r', 'p', 'v', 'm', 'f') and c.relpersistence <> 't'
          and {user_schema()}
          and {may_write()}
        order by 1, 2
        """
    ).fetchall()
    skip = set(content)
    return [TableRef(s, n) for s, n, rs, rn in rows if TableRef(s, n) not in skip and TableRef(rs, rn) not in skip]



def definer_routes_sql(role: str, counted: str) -> str:
    """The one query "SECURITY DEFINER routines ``role`` could call whose
    owner could write a counted table": a route around every grant, for
    the routine runs with its owner's rights. Rows: the routine's
    signature, its owner. ``counted`` is an SQL condition on ``c`` (a
    pg_class row) and ``cn`` (its namespace) saying which tables count;
    system schemas never do. Left out: trigger and event-trigger functions
    (they cannot be called), routines the role may become the owner of
    (``may_write`` counts that owner's tables already), and STABLE or
    IMMUTABLE ones in SQL or PL/pgSQL, where PostgreSQL refuses INSERT,
    UPDATE and DELETE (such a one could still call a volatile function,
    which runs as its owner: the per-transaction proof still sees any
    write). ``role`` and ``counted`` are our code's SQL, never user input;
    no "%" in it but what ``counted`` brings."""
    return textwrap.dedent(f"""
        with callable as (
            select quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')' as routine,
                   p.proowner
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
            where p.prosecdef and p.prokind in ('f', 'p') and {user_schema(ours=True)}
              and p.prorettype not in ('pg_catalog.trigger'::regtype, 'pg_catalog.event_trigger'::regtype)
              and (p.provolatile = 'v' or l.lanname not in ('sql', 'plpgsql'))
              and not pg_has_role({role}, p.proowner, 'MEMBER')
              and exists (select from pg_roles caller where pg_has_role({role}, caller.oid, 'MEMBER')
                          and has_schema_privilege(caller.oid, n.oid, 'USAGE') and has_function_privilege(caller.oid, p.oid, 'EXECUTE'))
        ), writers as materialized (  -- each owner once: a catalog of many routines and tables is asked owners × tables, not routines × tables
            select o.proowner from (select distinct proowner from callable) o
            where exists (select from pg_class c join pg_namespace cn on cn.oid = c.relnamespace
                          where c.relkind in ('r', 'p', 'v', 'f') and c.relpersistence <> 't' and {user_schema("cn.nspname")}
                            and ({counted}) and {may_write("o.proowner", "c")})
        )
        select routine, pg_get_userbyid(proowner) from callable where proowner in (select proowner from writers)
        order by 1
    """).strip()


def definer_routes(conn: psycopg.Connection, content: Iterable[TableRef]) -> list[str]:
    """``definer_routes_sql`` for the connected role and the tables outside
    ``content`` (and its partitions), as ``writable_tables`` counts them:
    ``schema.routine(args) (owner role)``."""
    content = list(content)
    rows = conn.execute(
        definer_routes_sql(
            "current_user",
            "not exists (select from unnest(%s::text[], %s::text[]) as a(s, t) join pg_namespace an on an.nspname = a.s"
            " join pg_class ac on ac.relnamespace = an.oid and ac.relname = a.t"
            " where ac.oid in (c.oid, coalesce(pg_partition_root(c.oid), c.oid)))",
        ),
        [[t.schema for t in content], [t.name for t in content]],
    ).fetchall()
    return [f"{routine} (owner {owner})" for routine, owner in rows]


def row_count(conn: psycopg.Connection, table: TableRef) -> int:
    return conn.execute(sql.SQL("select count(*) from {}").format(table.ident)).fetchone()[0]


def table_fingerprint(conn: psycopg.Connection, table: TableRef, layout: Sequence[tuple[str, str]] | None = None) -> tuple[int, str]:
    """(row count, order-independent content hash) computed in SQL.

    The hash is the sum of the one row hash every comparison uses
    (``shared.rowhash.row_hash`` over every column, ``layout``'s (name,
    type) pairs or the catalog's), so it needs constant memory and no ORDER
    BY, and is comparable across databases and servers (14+ on both sides,
    or older on both).
    """
    cols = list(layout) if layout is not None else [(c.name, c.type) for c in columns(conn, table)]
    shape = rowhash.TableShape(
        table, (), (), (), tuple(n for n, _ in cols), tuple(t for _, t in cols), native_hash=server_version(conn) >= 140000
    )
    hashed = rowhash.row_hash(shape) if cols else sql.SQL("0")
    count, total = conn.execute(
        sql.SQL("select count(*), coalesce(sum({}), 0)::text from {}").format(hashed, shape.from_item())
    ).fetchone()
    return count, total


def database_fingerprint(conn: psycopg.Connection, schemas: Sequence[str] | None = None) -> dict[str, tuple[int, str]]:
    """Fingerprint of every table: what tests and reports use to prove that
    nothing changed."""
    tables = list_tables(conn, schemas)
    shapes = table_shapes(conn, sorted({t.schema for t in tables}))
    return {str(t): table_fingerprint(conn, t, [(n, ty) for n, ty, _ in shapes[t][0]]) for t in tables}
