"""``python -m tests.reliability [FILE]``: print the table of the last
``make reliability`` run again (default ``reliability-results.json``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .figures import render


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "reliability-results.json"
    if not path.exists():
        print(f"no results at {path}: run `make reliability` first", file=sys.stderr)
        return 2
    data = json.loads(path.read_text())
    rows = data["areas"]
    render(rows, title=f"safesync reliability (scale {data['scale']}, seed {data['seed']})")
    return 1 if any(r["unexpected"] or r["changed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
