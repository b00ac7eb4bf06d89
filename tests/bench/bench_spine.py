"""Spine figures: cold start of a function process, storage streaming."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile

from tests.test_cold_start import first_response_time


def _cold_start_rows() -> list[dict]:
    rows = []
    for target in ("backup", "content_sync", "calendar_sync", "status"):
        times = [first_response_time(target)[0] for _ in range(5)]
        rows.append({"name": f"cold start → first 401 ({target})", "wall_s": round(statistics.median(times), 3), "target": "< 0.5 s", "met": statistics.median(times) < 0.5})
    return rows


STREAM = """
import hashlib, os, re, sys, time
from safesync.shared.storage import open_storage
s = open_storage(sys.argv[1])
def rss(field):  # kB; ru_maxrss would start at the parent's peak
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read())[1])
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
base = rss("VmRSS")
def gen():
    for _ in range(200):
        yield os.urandom(1 << 20)
t = time.perf_counter(); s.put("bench/blob", gen()); up = time.perf_counter() - t
t = time.perf_counter(); h = hashlib.sha256()
for c in s.iter_chunks("bench/blob"): h.update(c)
down = time.perf_counter() - t
s.delete("bench/blob")
print(up, down, (rss("VmHWM") - base) / 1024)
"""


def _storage_rows() -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, "-c", STREAM, f"file://{folder}"], capture_output=True, text=True, check=True).stdout.split()
    up, down, rss = map(float, out)
    return [{"name": "local storage 200 MiB put / get (RSS growth)", "wall_s": f"{up:.2f} / {down:.2f}", "mb_per_s": f"{200 / up:.0f} / {200 / down:.0f}", "peak_rss_mb": round(rss, 1), "target": "growth < 64 MB", "met": rss < 64}]


def run() -> list[dict]:
    return _cold_start_rows() + _storage_rows()
