"""backup — logical backups streamed to object storage, checksummed,
rotated, verified and restorable; the pre-deploy backup.

Library API for other jobs (they take no lock; call them inside your run):

- ``undo_point(settings, db, kind, *, trigger, report=None, progress=None, tables=None) -> UndoPoint``
  — the backup a job takes before it writes (kinds presync, premigrate,
  safety): ``id``, ``kind``, ``dump_key``, ``size``
- ``create_backup(settings, db, kind, trigger=None, report=None) -> BackupInfo``
  (kinds: manual, daily, predeploy, presync, premigrate, safety)
- ``list_backups(settings, db=None) -> list[BackupInfo]`` (complete only, newest first)
- ``latest_backup(settings, db) -> BackupInfo | None``
- ``backup_catalog(settings, db) -> DbCatalog``: one scan — ``complete``, ``newest_full``, ``damaged`` (unreadable manifests, manifests without their dump)
- ``get_backup(settings, backup_id) -> BackupInfo``
- ``verify_backup(settings, backup_id_or_info, restore_drill_too=False) -> VerifyResult``
- ``restore_backup(settings, backup_id, target_db, confirm=None, db=None) -> RestoreResult``
- ``prune_database(settings, db, dry_run=False) -> PruneResult``
- ``backup_timeline(settings, db) -> dict`` (kept by which rule, sizes, last verify/drill)

Runs (``jobs.py``: lock, QStash de-duplication, stored report — what HTTP
and the CLI answer with; the demo calls them too): ``run_create``,
``run_list``, ``run_verify``, ``run_restore``, ``run_prune`` (each ``-> Answer``).

HTTP (``handle_http``, ``http.py``) and CLI (``register_cli``, ``cli.py``)
wrap the runs.
"""

from .catalog import backup_catalog, get_backup, latest_backup, list_backups
from .cli import register_cli
from .create import create_backup
from .http import handle_http
from .jobs import run_create, run_list, run_prune, run_restore, run_verify
from .layout import KINDS
from .manifest import BackupInfo, human_bytes
from .prune import PruneResult, prune_database
from .restore import RestoreResult, restore_backup
from .timeline import backup_timeline
from .undo_point import UndoPoint, undo_point
from .verify import VerifyResult, verify_backup

__all__ = [
    "KINDS",
    "BackupInfo",
    "PruneResult",
    "RestoreResult",
    "UndoPoint",
    "VerifyResult",
    "backup_timeline",
    "backup_catalog",
    "create_backup",
    "get_backup",
    "handle_http",
    "human_bytes",
    "latest_backup",
    "list_backups",
    "prune_database",
    "register_cli",
    "restore_backup",
    "run_create",
    "run_list",
    "run_prune",
    "run_restore",
    "run_verify",
    "undo_point",
    "verify_backup",
]
