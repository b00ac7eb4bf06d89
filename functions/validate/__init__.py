"""``validate``: integrity checks on one database, or a diff of two.

One database (``safesync validate [--db NAME]``): row counts, FK orphans
(NOT VALID FKs and configured ``expected_relations`` included), RLS disabled
in ``rls_schemas``, missing primary keys, invalid indexes, sequences behind
their column, and the user's ``[[validate.rules]]`` — all read-only.

Two databases (``--against NAME``): schema diff (every kind the catalog
module describes; the others listed as "not compared") and data diff (per
table counts and content hashes, naming the first differing keys).

This module is the job's face, the only part other modules may import
(the staging clone and migrate do):

- ``validate(settings, db=None, against=None, *, trigger=None) -> Answer``
  — the run (``jobs.py``);
- ``check_database(settings, db, conn) -> CheckReport`` (the configured
  checks) or ``run_checks(conn, *, schemas, …)`` (explicit schemas,
  relations, ``RuleSpec`` rules) — inside the caller's run;
- ``compare(conn_a, conn_b, schemas, …) -> Comparison`` (``.identical``,
  ``.into_report(report, a_name, b_name)``; ``comparison.py``);

and ``handle_http`` (``http.py``) and ``register_cli`` (``cli.py``), which
wrap ``validate``. Engines: ``checks``, ``rules``, ``catalog``,
``schema_diff``, ``data_diff``.
"""

from .checks import CheckReport, Relation, run_checks
from .cli import register_cli
from .comparison import Comparison, compare
from .data_diff import DataDiff
from .http import handle_http
from .jobs import check_database, validate
from .rules import RuleSpec
from .schema_diff import SchemaDiff

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
