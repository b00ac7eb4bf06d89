"""``content_sync``: push content tables from dev to prod without ever
touching user data — ``compare``, ``dry-run`` (the real sync, rolled back,
with a plan digest) and ``sync`` (``expect_plan`` pins a reviewed plan).

This module is the job's face, the only part other modules may import:

- ``content_sync(settings, mode, *, expect_plan=None, adopt=False,
  trigger=None, delivery=None, hook=None, progress=None) -> Answer``
- ``content_undo(settings, run_id, *, dry_run=False, expect_plan=None,
  trigger=None, delivery=None, hook=None) -> Answer``

both runs (``jobs.py``: the target's lock, QStash de-duplication, the run
report); ``check_content_sync(settings, facts)`` (``preflight.py``: what
doctor checks for the sync — tables, keys, the role's privileges); and
``handle_http`` (``http.py``) and ``register_cli``
(``cli.py``), which wrap them. Engines: ``plan`` (config → tables, keys,
match_on and FK translations, drift, FK order, protected set;
``TableSpec`` is the shared engine's ``TableShape`` plus what the writer
needs, translated FKs read as the parent's natural key), ``ledger`` (the
three-way ancestor kept in the target), ``conflicts`` (three-way
classification), ``apply`` (staging, upsert, deletes, sequences), ``proof``
(protection proof), ``digest`` (plan digest), ``safety`` (the presync undo
point), ``undolog`` (the undo log's format), ``undo`` (putting a run
back), ``job`` (the flow). Rows are compared by the one engine all jobs
share: ``shared.rowhash`` (SQL row hashes, key expressions) and
``shared.rowdiff`` (key-range checksum descent, both sides at once).
"""

from .cli import register_cli
from .http import handle_http
from .jobs import content_sync, content_undo
from .preflight import check_content_sync

__all__ = ["check_content_sync", "content_sync", "content_undo", "handle_http", "register_cli"]
