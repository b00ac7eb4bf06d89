"""``staging_clone``: make staging an exact copy of dev's configured schemas,
atomically, then prove it.

Order of a run (``safesync staging clone`` / POST ``/staging_clone``):

1. open a snapshot on the source (the dump and the final comparison both
   read it, so edits on dev during the clone cannot make the proof lie);
2. start pg_dump on that snapshot (``engine.start_dump``: its catalog reads
   overlap the plan; it waits on its pipe until the swap reads it, and is
   killed if the run stops before), then plan and refuse what is unsafe
   (``plan.plan_clone``);
3. safety backup of the whole target database to storage (kind ``safety``);
4. the swap, one transaction (``engine.stream_clone``): drop the schemas,
   recreate them from the dump, apply masks, verify, COMMIT;
5. compare source (same snapshot) and target: schema diff + data diff. The
   report says "identical" only when both are empty.

This module is the job's face, the only part other modules may import:

- ``clone(settings, *, dry_run=False, trigger=None, delivery=None,
  progress=None) -> Answer`` — the run above (``jobs.py``: the target's
  lock, the run report);
- ``clone_database(source_url, target_url, options, *, report=None,
  dry_run=False, before_swap=None, compare_after=True, progress=None) ->
  CloneResult`` and ``options_from_config(settings) -> CloneOptions``
  (``database.py``) — a clone inside the caller's run (migrate rehearses
  on a scratch clone);

and ``handle_http`` (``http.py``) and ``register_cli`` (``cli.py``), which
wrap ``clone``. Engines: ``plan``, ``engine`` (the swap), ``dumpfilter``,
``carry``.
"""

from .cli import register_cli
from .database import CloneResult, clone_database, options_from_config
from .http import handle_http
from .jobs import clone
from .plan import CloneOptions, ClonePlan, Mask

__all__ = ["CloneOptions", "ClonePlan", "CloneResult", "Mask", "clone", "clone_database", "handle_http", "options_from_config", "register_cli"]
