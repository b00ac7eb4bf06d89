"""``validate``: integrity checks on one database, or a diff of two.

One database (``safesync validate [--db NAME]``): row counts, FK orphans
(NOT VALID FKs and configured ``expected_relations`` included), RLS disabled
in ``rls_schemas``, missing primary keys, invalid indexes, sequences behind
their column, and the user's ``[[validate.rules]]`` — all read-only.

Two databases (``--against NAME``): schema diff (every kind the catalog
module describes; the others listed as "not compared") and data diff (per
table counts and content hashes, naming the first differing keys).

Library API (used by the staging clone and migrations):
``check_database`` (the configured checks) or ``run_checks`` (explicit
schemas, relations, ``RuleSpec`` rules), ``compare`` → ``Comparison``
(``.identical``, ``.into_report(report, a_name, b_name)``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import psycopg
from pydantic import BaseModel, ConfigDict

from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect
from safesync.shared.http import Call, validate_body
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from .checks import CheckReport, Relation, run_checks
from .data_diff import DataDiff, data_diff
from .rules import RuleSpec
from .schema_diff import SchemaDiff, schema_diff

__all__ = [
    "CheckReport",
    "Comparison",
    "DataDiff",
    "Relation",
    "RuleSpec",
    "SchemaDiff",
    "check_database",
    "compare",
    "run_checks",
    "handle_http",
    "register_cli",
    "validate",
]


@dataclass
class Comparison:
    """Schema diff + data diff of two databases."""

    schema: SchemaDiff
    data: DataDiff

    @property
    def identical(self) -> bool:
        return self.schema.identical and self.data.identical

    def into_report(self, report: Report, a_name: str, b_name: str) -> None:
        """Tables and details for a report (the caller sets the status)."""
        report.tables["schema differences"] = self.schema.rows(a_name, b_name)
        report.tables["data differences"] = self.data.rows(a_name, b_name)
        report.tables["not compared"] = self.schema.not_compared_rows(a_name, b_name) + [
            {"kind": f"columns of {t.table}", "columns": ", ".join(t.excluded_columns), "compared": "no (masked)"}
            for t in self.data.tables
            if t.excluded_columns
        ] + [
            {"kind": f"data of {t.table}", "compared": f"no ({t.note.split(':')[0]})"} for t in self.data.tables if t.status == "not compared"
        ]
        report.details["comparison"] = {
            "identical": self.identical,
            "schema_identical": self.schema.identical,
            "data_identical": self.data.identical,
            "schema_differences": len(self.schema.differences),
            "tables_differing": len(self.data.differing),
            "compared_kinds": {k: {a_name: a, b_name: b} for k, (a, b) in self.schema.compared.items()},
            "tables_compared": len(self.data.tables),
        }

    def summary(self, a_name: str, b_name: str) -> str:
        if self.identical:
            return f"{a_name} and {b_name} are identical ({len(self.data.tables)} tables, schema and data)"
        parts = []
        if not self.schema.identical:
            parts.append(f"{len(self.schema.differences)} schema difference(s)")
        if not self.data.identical:
            parts.append(f"{len(self.data.differing)} table(s) with different data")
        return f"{a_name} and {b_name} differ: " + ", ".join(parts)


def compare(
    conn_a: psycopg.Connection,
    conn_b: psycopg.Connection,
    schemas: Sequence[str],
    *,
    exclude_columns: dict[TableRef, Iterable[str]] | None = None,
    count_only: Iterable[TableRef] = (),
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Schema and data diff of ``schemas`` (connections from ``shared.db.connect``:
    pinned settings make the row hashes comparable)."""
    schema = schema_diff(conn_a, conn_b, schemas)
    data = data_diff(conn_a, conn_b, schemas, exclude_columns=exclude_columns, count_only=count_only, progress=progress)
    return Comparison(schema, data)


def default_database(settings: Settings) -> str:
    return settings.config.validate_.database or settings.config.content_sync.target


def schemas_of(settings: Settings) -> list[str]:
    return list(settings.config.validate_.schemas or settings.config.staging_clone.schemas)


def check_database(settings: Settings, db: str, conn: psycopg.Connection) -> CheckReport:
    """All one-database checks configured for ``db``."""
    cfg = settings.config.validate_
    relations = [
        Relation(
            f"{r.table}({', '.join(r.columns)}) → {r.references}({', '.join(r.ref_columns)})",
            TableRef.parse(r.table),
            tuple(r.columns),
            TableRef.parse(r.references),
            tuple(r.ref_columns),
        )
        for r in cfg.expected_relations
    ]
    rules = [RuleSpec(r.name, r.sql, r.max_rows) for r in cfg.rules if r.database in (None, db)]
    return run_checks(
        conn,
        schemas=schemas_of(settings),
        rls_schemas=cfg.rls_schemas,
        expected_relations=relations,
        allow_missing_pk=cfg.allow_missing_pk,
        rules=rules,
        rule_timeout=cfg.rule_timeout,
    )


def _one(settings: Settings, db: str, report: Report) -> None:
    with connect(settings.database_url(db), application_name="safesync-validate") as conn:
        with report.timed("checks"):
            result = check_database(settings, db, conn)
    report.details.update({"database": db, "schemas": schemas_of(settings)})
    report.tables["checks"] = result.summary_rows()
    report.tables["failures"] = [f.row() for f in result.findings]
    report.tables["row counts"] = [{"table": t, "rows": n} for t, n in result.counts.items()]
    if result.ok:
        report.summary = f"{db}: all checks passed ({len(result.counts)} tables)"
    else:
        checks = sorted({f.check for f in result.findings})
        report.problems(f"{db}: {len(result.findings)} problem(s) in {', '.join(checks)}")


def _two(settings: Settings, db: str, against: str, report: Report) -> None:
    schemas = schemas_of(settings)
    with connect(settings.database_url(db), application_name="safesync-validate") as a, connect(
        settings.database_url(against), application_name="safesync-validate"
    ) as b:
        a.read_only = b.read_only = True
        with report.timed("compare"):
            comparison = compare(a, b, schemas)
    report.details.update({"database": db, "against": against, "schemas": schemas})
    comparison.into_report(report, db, against)
    summary = comparison.summary(db, against)
    if comparison.identical:
        report.summary = summary
    else:
        report.problems(summary)


def validate(settings: Settings, db: str | None = None, against: str | None = None, *, trigger: dict[str, Any] | None = None) -> Answer:
    """Run validation as a job (report stored under ``runs/validate/``)."""
    db = settings.check_database(db or default_database(settings))
    if against is not None:
        settings.check_database(against)
    report = Report("validate", "compare" if against else "check", trigger=trigger or {"via": "cli"})
    if against:
        fn = lambda r: _two(settings, db, against, r)  # noqa: E731
    else:
        fn = lambda r: _one(settings, db, r)  # noqa: E731
    return execute(settings, report, fn)  # read-only, no lock: answered afresh each time


class ValidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db: str | None = None
    against: str | None = None


def handle_http(call: Call) -> Answer:
    body = validate_body(ValidateBody, call.body)
    return validate(call.settings, body.db, body.against, trigger=call.trigger())


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", parents=[parent], help="integrity checks on one database, or diff two (--against)")
    p.add_argument("--db", metavar="NAME", help="database to check (default: validate.database or the content-sync target)")
    p.add_argument("--against", metavar="NAME", help="compare schema and data with this database instead")
    p.set_defaults(func=lambda args, settings: validate(settings, args.db, args.against))
