"""Validation as a run (``runner.execute``: the report stored under
``runs/validate/``; read-only, so no lock), and ``check_database``: the
checks configured for one database, which migrate also runs.
"""

from __future__ import annotations

from typing import Any

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect
from safesync.shared.errors import ConfigError
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from .checks import CheckReport, Relation, run_checks
from .comparison import compare
from .rules import RuleSpec


def default_database(settings: Settings) -> str:
    return settings.config.validate_.database or settings.config.content_sync.target


def schemas_of(settings: Settings) -> list[str]:
    return list(settings.config.validate_.schemas or settings.config.staging_clone.schemas)


def _schemas_setting(settings: Settings) -> str:
    return "validate.schemas" if settings.config.validate_.schemas else "staging_clone.schemas (validate's default)"


def _missing_schemas(conn: psycopg.Connection, schemas: list[str]) -> list[str]:
    with conn.transaction():
        present = {r[0] for r in conn.execute("select nspname from pg_namespace where nspname = any(%s)", [schemas])}
    return [s for s in schemas if s not in present]


def _require_schemas(missing: list[str], setting: str, absent: str) -> None:
    """A configured schema that is not there proves nothing: every check
    passes over its no tables, and two databases that both lack it compare
    "identical" — a typo must not read as a clean bill of health."""
    if missing:
        raise ConfigError(f"{setting}: schema(s) {', '.join(map(repr, missing))} {absent}")


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


def _check(settings: Settings, db: str, report: Report) -> None:
    with connect(settings.database_url(db), application_name="safesync-validate") as conn:
        _require_schemas(_missing_schemas(conn, schemas_of(settings)), _schemas_setting(settings), f"do not exist in {db}")
        _require_schemas(_missing_schemas(conn, list(settings.config.validate_.rls_schemas)), "validate.rls_schemas", f"do not exist in {db}")
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


def _compare(settings: Settings, db: str, against: str, report: Report) -> None:
    schemas = schemas_of(settings)
    with connect(settings.database_url(db), application_name="safesync-validate") as a, connect(
        settings.database_url(against), application_name="safesync-validate"
    ) as b:
        a.read_only = b.read_only = True
        # a schema only one side has is a difference the comparison names; one neither has is a typo
        lacking = set(_missing_schemas(b, schemas))
        _require_schemas([s for s in _missing_schemas(a, schemas) if s in lacking], _schemas_setting(settings), f"exist in neither {db} nor {against}")
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
    db = settings.check_database(db if db is not None else default_database(settings))
    if against is not None:
        settings.check_database(against)
    report = Report("validate", "compare" if against else "check", trigger=trigger or {"via": "cli"})
    if against:
        fn = lambda r: _compare(settings, db, against, r)  # noqa: E731
    else:
        fn = lambda r: _check(settings, db, r)  # noqa: E731
    return execute(settings, report, fn)  # read-only, no lock: answered afresh each time
