"""pytest plugin for ``make reliability`` (``-p tests.reliability.table``):
collects the figures every reliability test records and prints ONE table at
the end of the session (also written to ``reliability-results.json``).

The secrets row comes from the suite-wide secrets check in
``tests/conftest.py`` (it runs first and leaves its counts on the config).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .figures import RESULTS_DIR_ENV, load, merge, render
from .scale import SCALE, SEED

RESULTS_FILE = "reliability-results.json"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config):  # workers inherit the folder through the environment
        os.environ[RESULTS_DIR_ENV] = tempfile.mkdtemp(prefix="safesync-reliability-")


def _secrets_row(config: pytest.Config) -> dict | None:
    scan = getattr(config, "_safesync_secrets_scan", None)
    if scan is None:
        return None
    leaks = len(scan["leaks"])
    leaking_files = len({leak.rsplit(": ", 1)[0] for leak in scan["leaks"]})
    return {
        "area": "secrets", "tests": 1, "tried": scan["files"], "expected": scan["files"] - leaking_files,
        "unexpected": leaks, "changed": 0,
        "figures": {"files scanned": str(scan["files"]), "log lines": str(scan["log_lines"]), "sentinels": str(scan["needles"]), "leaks": str(leaks)},
        "notes": scan["leaks"][:5],
    }


@pytest.hookimpl(trylast=True)  # after tests/conftest.py's secrets check
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_worker(session.config):
        return
    folder = Path(os.environ.get(RESULTS_DIR_ENV, ""))
    rows = merge(load(folder)) if folder.is_dir() else []
    secrets = _secrets_row(session.config)
    if secrets is not None:
        rows.insert(next((i for i, r in enumerate(rows) if r["area"] in ("cold start", "load")), len(rows)), secrets)
    out = Path(str(session.config.rootpath)) / RESULTS_FILE
    out.write_text(json.dumps({"scale": SCALE, "seed": SEED, "exitstatus": int(exitstatus), "areas": rows}, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and rows:
        text = io.StringIO()
        render(rows, title=f"safesync reliability (scale {SCALE}, seed {SEED}) — {out.name}", file=text)
        reporter.write_line("")
        reporter.write(text.getvalue())
