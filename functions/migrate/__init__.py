"""``migrate`` — a team's migration (a folder of ``.sql`` files, or its own
command: ``prisma migrate deploy``, ``alembic upgrade head``…) made safe:
rehearsed on a clone, backed up, applied with timeouts, validated, and
rolled back automatically when it fails.

- ``plan``: what would run, against which database (read-only, not stored).
- ``rehearse``: clone the target into ``rehearse_on``, migrate the clone,
  validate, diff target vs rehearsal (``rehearse.py``).
- ``apply``: only after a passing rehearsal of the same plan; premigrate
  backup, migrate, validate, roll back on failure (``apply.py``).

This module is the job's face: ``plan(settings, *, trigger=None)``,
``rehearse(settings, *, trigger=None)``, ``apply(settings, *,
skip_rehearsal=False, trigger=None)`` (each ``-> Answer``; ``jobs.py``:
rehearse and apply hold the ``migrate`` lock on the target database) and
``build_plan(settings) -> Plan``; ``handle_http`` (``http.py``) and
``register_cli`` (``cli.py``) wrap them. It uses other jobs only through
their faces: ``backup.undo_point`` / ``restore_backup``,
``staging_clone.clone_database``, ``validate.compare`` /
``check_database``.
"""

from .cli import register_cli
from .http import handle_http
from .plan import Plan, build_plan
from .jobs import apply, plan, rehearse  # last: these names shadow the submodules apply, plan, rehearse

__all__ = ["Plan", "apply", "build_plan", "handle_http", "plan", "register_cli", "rehearse"]
