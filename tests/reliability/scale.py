"""How hard each area pushes: ``RELIABILITY_SCALE`` =

- ``smoke`` (default; what ``make test`` runs): every case family once, few
  examples, one kill trial per job, a 2 s load run;
- ``standard`` (``make reliability``): more examples, 3 kill trials, 5 s load;
- ``full`` (manual): hundreds of examples, 8 kill trials, 30 s load.

``RELIABILITY_SEED`` fixes every random choice (kill delays, examples).
"""

from __future__ import annotations

import os

SCALES = ("smoke", "standard", "full")
SCALE = os.environ.get("RELIABILITY_SCALE", "smoke").strip().lower() or "smoke"
if SCALE not in SCALES:
    raise RuntimeError(f"RELIABILITY_SCALE must be one of {', '.join(SCALES)}, not {SCALE!r}")
SEED = int(os.environ.get("RELIABILITY_SEED", "8"))


def pick(smoke, standard, full):
    """The value for the current scale."""
    return {"smoke": smoke, "standard": standard, "full": full}[SCALE]
