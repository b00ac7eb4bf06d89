"""Integrity checks on one database.

Each check returns ``Finding``s (one per offending object, with a few sample
rows) and never writes: every check runs in its own READ ONLY transaction
with ``row_security = off`` (so a role subject to RLS gets an error instead
of silently seeing fewer rows). ``run_checks`` runs them all plus the user's
SQL rules and returns a ``CheckReport``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import psycopg
from psycopg import sql

from safesync.shared.db import TableRef, foreign_keys, list_tables, read_only, row_count

from .rules import RuleSpec, run_rule

SAMPLE_ROWS = 5
CHECKS = (
    "foreign key orphans",
    "expected relations",
    "row level security",
    "primary keys",
    "indexes valid",
    "sequences ahead of data",
    "rules",
)


@dataclass
class Finding:
    check: str
    name: str
    problem: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {"check": self.check, "object": self.name, "problem": self.problem, "sample": self.rows or None}


@dataclass(frozen=True)
class Relation:
    """A relation the data should satisfy, enforced by an FK or not."""

    name: str
    table: TableRef
    columns: tuple[str, ...]
    ref_table: TableRef
    ref_columns: tuple[str, ...]


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # table -> rows
    checked: dict[str, int] = field(default_factory=dict)  # check -> objects examined

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary_rows(self) -> list[dict[str, Any]]:
        rows = []
        for check in CHECKS:
            failed = [f for f in self.findings if f.check == check]
            rows.append(
                {
                    "check": check,
                    "examined": self.checked.get(check, 0),
                    "status": "FAILED" if failed else "ok",
                    "failures": len(failed),
                }
            )
        return rows


def _pairs(cols: Sequence[str], refs: Sequence[str]) -> sql.Composable:
    return sql.SQL(" and ").join(
        sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c)) for c, r in zip(cols, refs)
    )


def orphans(conn: psycopg.Connection, rel: Relation, sample: int = SAMPLE_ROWS) -> tuple[int, list[dict[str, Any]]]:
    """(orphan count, first orphans): child rows whose non-null key has no
    parent (MATCH SIMPLE, as PostgreSQL enforces FKs)."""
    query = sql.SQL(
        "select {cols}, count(*) over () from {child} c where {notnull} "
        "and not exists (select 1 from {parent} p where {pairs}) order by {cols} limit {n}"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier("c", x) for x in rel.columns),
        child=rel.table.ident,
        notnull=sql.SQL(" and ").join(sql.SQL("c.{} is not null").format(sql.Identifier(x)) for x in rel.columns),
        parent=rel.ref_table.ident,
        pairs=_pairs(rel.columns, rel.ref_columns),
        n=sql.Literal(sample),
    )
    rows = conn.execute(query).fetchall()
    if not rows:
        return 0, []
    return rows[0][-1], [dict(zip(rel.columns, (str(v) for v in r[:-1]))) for r in rows]


def check_relations(conn: psycopg.Connection, relations: Sequence[Relation], check: str) -> list[Finding]:
    out = []
    for rel in relations:
        with read_only(conn):
            count, rows = orphans(conn, rel)
        if count:
            out.append(
                Finding(check, rel.name, f"{count} row(s) of {rel.table} reference missing {rel.ref_table} rows", rows)
            )
    return out


def fk_relations(conn: psycopg.Connection, schemas: Sequence[str]) -> list[Relation]:
    """Every FK (validated or NOT VALID) of tables in ``schemas``."""
    return [
        Relation(
            f"{fk.table}.{fk.name}" + ("" if fk.validated else " (NOT VALID)"),
            fk.table,
            fk.columns,
            fk.ref_table,
            fk.ref_columns,
        )
        for fk in foreign_keys(conn, schemas)
    ]


def rls_disabled(conn: psycopg.Connection, rls_schemas: Sequence[str]) -> tuple[int, list[Finding]]:
    """The tables (``list_tables``: a partition of a parent elsewhere too)
    of ``rls_schemas`` with row level security off."""
    with read_only(conn):
        tables = set(list_tables(conn, rls_schemas))
        rows = conn.execute(
            """
            select n.nspname, c.relname, c.relrowsecurity,
                   exists (select 1 from pg_policy p where p.polrelid = c.oid)
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p') and n.nspname = any(%s)
            order by 1, 2
            """,
            [list(rls_schemas)],
        ).fetchall()
    rows = [r for r in rows if TableRef(r[0], r[1]) in tables]
    findings = [
        Finding("row level security", str(TableRef(s, t)), "row level security is disabled" + (" (it has policies)" if has_policies else ""))
        for s, t, enabled, has_policies in rows
        if not enabled
    ]
    return len(rows), findings


def missing_primary_keys(conn: psycopg.Connection, schemas: Sequence[str], allowed: Sequence[str]) -> tuple[int, list[Finding]]:
    allow = {str(TableRef.parse(t)) for t in allowed}
    with read_only(conn):
        tables = set(list_tables(conn, schemas))
        rows = conn.execute(
            """
            select n.nspname, c.relname
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p') and n.nspname = any(%s)
              and not exists (select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'p')
            order by 1, 2
            """,
            [list(schemas)],
        ).fetchall()
    rows = [r for r in rows if TableRef(*r) in tables]
    return len(tables), [
        Finding("primary keys", str(TableRef(s, t)), "table has no primary key")
        for s, t in rows
        if str(TableRef(s, t)) not in allow
    ]


def invalid_indexes(conn: psycopg.Connection, schemas: Sequence[str]) -> tuple[int, list[Finding]]:
    with read_only(conn):
        rows = conn.execute(
            """
            select n.nspname, c.relname, i.indisvalid, i.indisready
            from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = any(%s) order by 1, 2
            """,
            [list(schemas)],
        ).fetchall()
    return len(rows), [
        Finding(
            "indexes valid",
            f"{s}.{name}",
            "index is INVALID" + ("" if ready else " and not ready") + " (a failed CREATE INDEX CONCURRENTLY or REINDEX?)",
        )
        for s, name, valid, ready in rows
        if not (valid and ready)
    ]


# Every (sequence, table, column) where the column draws from the sequence:
# owned (serial, identity) or only named in the column's DEFAULT nextval(…)
# (pagila's, many hand-written and Prisma schemas'). Partitions are covered
# by their parent's max.
SEQUENCE_USES = """
    select distinct quote_ident(n.nspname) || '.' || quote_ident(c.relname), tn.nspname, t.relname, a.attname,
           s.seqincrement, s.seqmin, s.seqmax, s.seqcycle
    from pg_sequence s
    join pg_class c on c.oid = s.seqrelid join pg_namespace n on n.oid = c.relnamespace
    join lateral (
        select d.refobjid as relid, d.refobjsubid as attnum from pg_depend d
        where d.classid = 'pg_class'::regclass and d.objid = s.seqrelid
          and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i') and d.refobjsubid > 0
        union
        select ad.adrelid, ad.adnum from pg_depend d join pg_attrdef ad on ad.oid = d.objid
        where d.classid = 'pg_attrdef'::regclass and d.refclassid = 'pg_class'::regclass and d.refobjid = s.seqrelid
    ) u on true
    join pg_class t on t.oid = u.relid and not t.relispartition join pg_namespace tn on tn.oid = t.relnamespace
    join pg_attribute a on a.attrelid = u.relid and a.attnum = u.attnum
    where n.nspname = any(%(schemas)s) or tn.nspname = any(%(schemas)s)
    order by 1, 2, 3, 4
"""


def sequences_behind(conn: psycopg.Connection, schemas: Sequence[str]) -> tuple[int, list[Finding]]:
    """Sequences whose next value the next insert cannot use: already used
    by a column that draws from them (a duplicate key), or none at all (an
    exhausted sequence that does not cycle: nextval fails). A cycling one
    past its end starts again from its other end: is that value taken?"""
    check = "sequences ahead of data"
    findings = []
    with read_only(conn):
        uses = conn.execute(SEQUENCE_USES, {"schemas": list(schemas)}).fetchall()
        following: dict[str, tuple[int, bool]] = {}  # sequence -> (its next value, wrapped around)
        for seq, schema, table, _, increment, low, high, cycle in uses:
            if seq in following:
                continue
            last, called = conn.execute(sql.SQL("select last_value, is_called from {}").format(sql.SQL(seq))).fetchone()
            next_value = last + increment if called else last
            wrapped = not low <= next_value <= high
            if wrapped and not cycle:
                end = f"maximum {high}" if increment > 0 else f"minimum {low}"
                findings.append(Finding(check, seq, f"sequence is exhausted (its {end} was reached): the next insert into {schema}.{table} fails"))
            following[seq] = ((low if increment > 0 else high) if wrapped else next_value, wrapped)
        for seq, schema, table, column, increment, _, _, cycle in uses:
            next_value, wrapped = following[seq]
            if wrapped and not cycle:
                continue
            target, col = sql.Identifier(schema, table), sql.Identifier(column)
            if wrapped:  # values from the start again: taken or not, whatever the column's max
                query = sql.SQL("select {c} from {t} where {c}::text = %s::text limit 1").format(c=col, t=target)
                if conn.execute(query, [str(next_value)]).fetchone() is not None:
                    findings.append(Finding(check, seq, f"next value {next_value} (the sequence cycled) is already used in {schema}.{table}.{column}"))
                continue
            agg = "max" if increment > 0 else "min"
            edge = conn.execute(sql.SQL("select {}({}) from {}").format(sql.SQL(agg), col, target)).fetchone()[0]
            if edge is None or not isinstance(edge, int):
                continue
            behind = next_value <= edge if increment > 0 else next_value >= edge
            if behind:
                findings.append(Finding(check, seq, f"next value {next_value} is already used: {agg}({schema}.{table}.{column}) = {edge}"))
    return len({u[0] for u in uses}), findings


def table_counts(conn: psycopg.Connection, schemas: Sequence[str]) -> dict[str, int]:
    with read_only(conn):
        return {str(t): row_count(conn, t) for t in list_tables(conn, schemas)}


def run_checks(
    conn: psycopg.Connection,
    *,
    schemas: Sequence[str],
    rls_schemas: Sequence[str] = (),
    expected_relations: Sequence[Relation] = (),
    allow_missing_pk: Sequence[str] = (),
    rules: Sequence[RuleSpec] = (),
    rule_timeout: str = "60s",
) -> CheckReport:
    """Every one-database check; ``CheckReport.ok`` when nothing was found."""
    report = CheckReport()
    report.counts = table_counts(conn, schemas)
    fks = fk_relations(conn, schemas)
    report.findings += check_relations(conn, fks, "foreign key orphans")
    report.checked["foreign key orphans"] = len(fks)
    report.findings += check_relations(conn, expected_relations, "expected relations")
    report.checked["expected relations"] = len(expected_relations)
    for check, (examined, found) in (
        ("row level security", rls_disabled(conn, rls_schemas)),
        ("primary keys", missing_primary_keys(conn, schemas, allow_missing_pk)),
        ("indexes valid", invalid_indexes(conn, schemas)),
        ("sequences ahead of data", sequences_behind(conn, schemas)),
    ):
        report.checked[check] = examined
        report.findings += found
    for rule in rules:
        result = run_rule(conn, rule, rule_timeout)
        if not result.ok:
            report.findings.append(Finding("rules", rule.name, result.problem, result.rows))
    report.checked["rules"] = len(rules)
    return report
