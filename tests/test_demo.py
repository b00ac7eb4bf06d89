"""``safesync demo`` (``make demo``) runs the whole story and proves user data untouched."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_end_to_end(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "safesync.functions.cli", "demo", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = json.loads(proc.stdout)
    assert body["ok"] and body["user_tables_unchanged"]
    steps = {s["step"]: s for s in body["steps"]}
    sync = steps["Sync content dev → prod"]["body"]
    assert sync["status"] == "ok"
    written = sum(row["written"] for row in sync["tables"]["tables"])
    assert written > 0
    assert steps["Compare dev with prod"]["body"]["status"] == "ok"
    conflict = steps["A hotfix in prod, an edit in dev: conflict"]
    assert conflict["status"] == 422 and "conflict" in conflict["body"]["summary"]
    assert (tmp_path / ".safesync-demo" / "backups" / "prod").is_dir()
