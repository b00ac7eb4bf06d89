"""What running a client binary told us — its version, whether its build
has a compression method — remembered between runs, on disk, keyed by the
file's identity (path, inode, size, modification time): a replaced or
upgraded binary is a new key and is asked again.

Asking costs a process start per binary: ``--version`` of every pg_dump
found, then a compression probe. That was 30–80 ms of every command line
run's start, before its pg_dump could begin (#21). Only answers a probe
completed are kept (a timeout or a binary that would not start is not an
answer). The file is only a cache: missing, unreadable, garbled or in an
unwritable place, it is ignored and the binaries are asked again.

It lives in ``$XDG_CACHE_HOME/safesync`` (else ``~/.cache/safesync``); with
neither an absolute cache home nor a home folder, answers are kept for the
process only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FILE = "client-probes.json"

_answers: dict[str, Any] | None = None  # this process's view: the file as loaded, plus what it asked since


def _file() -> Path | None:
    """The cache file; a relative ``XDG_CACHE_HOME`` is ignored, as the XDG
    base directory spec says."""
    for base in (os.environ.get("XDG_CACHE_HOME", ""), os.path.join(os.path.expanduser("~"), ".cache")):
        if os.path.isabs(base):
            return Path(base) / "safesync" / FILE
    return None


def _read() -> dict[str, Any]:
    path = _file()
    try:
        data = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def key(path: Path, *question: str) -> str | None:
    """The cache key of a question about the file at ``path``; None when the
    file cannot be looked at (nothing to ask then)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return "|".join([str(path), str(st.st_ino), str(st.st_size), str(st.st_mtime_ns), *question])


def get(question: str) -> Any:
    """The remembered answer, or None."""
    global _answers
    if _answers is None:
        _answers = _read()
    return _answers.get(question)


def put(question: str, answer: Any) -> None:
    """Remember ``answer`` (not None) for this process and, when the cache
    file can be written, for the next runs (merged with what other runs
    wrote meanwhile, replaced atomically)."""
    global _answers
    if _answers is None:
        _answers = _read()
    _answers[question] = answer
    path = _file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_read(), **_answers}
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".probes-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(merged, out)
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError:
        pass  # a cache: the next run asks again

