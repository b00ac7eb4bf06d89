"""How hard each area pushes: ``RELIABILITY_SCALE`` = ``smoke`` (default,
part of ``make test``) or ``full`` (a manual, heavier run);
``RELIABILITY_SEED`` fixes every random choice (kill delays, examples)."""

from __future__ import annotations

import os

SCALE = os.environ.get("RELIABILITY_SCALE", "smoke").strip().lower() or "smoke"
if SCALE not in ("smoke", "full"):
    raise RuntimeError(f"RELIABILITY_SCALE must be smoke or full, not {SCALE!r}")
SEED = int(os.environ.get("RELIABILITY_SEED", "8"))


def pick(smoke, full):
    """The value for the current scale."""
    return full if SCALE == "full" else smoke
