"""PostgreSQL client programs (pg_dump, pg_restore, psql): finding them,
checking they are new enough for a server, and starting them safely.

Looked up in ``$PG_BIN`` first, then ``PATH``. A pg_dump older than the
server it dumps fails (or silently misses features), so every job that
shells out checks the major version before it writes anything.

A child never sees the password on its command line (``ps`` shows those):
it gets a conninfo without it and ``PGPASSWORD`` in a minimal environment
that carries none of our other secrets. ``spawn_client`` also makes the
kernel kill the child if we die (``PR_SET_PDEATHSIG``): a psql that outlived
a killed safesync could still COMMIT work nobody is watching.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psycopg import conninfo as pg_conninfo

from .errors import ConfigError
from .log import redact

# What a client program may need from our environment — none of our secrets.
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PGSERVICEFILE", "PGSYSCONFDIR")
_KEEP_PREFIXES = ("PGSSL", "PGGSS", "PGKRB", "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS", "PGPASSFILE")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class PgTool:
    name: str
    path: Path
    version: tuple[int, int]  # (major, minor)

    @property
    def major(self) -> int:
        return self.version[0]


def find_tool(name: str) -> PgTool:
    """Locate ``name`` (``PG_BIN`` first, then ``PATH``) and read its version."""
    bin_dir = os.environ.get("PG_BIN", "").strip()
    candidate = Path(bin_dir) / name if bin_dir else None
    if candidate is None or not candidate.is_file():
        found = shutil.which(name)
        if not found:
            where = f"PG_BIN ({bin_dir}) or PATH" if bin_dir else "PATH (set PG_BIN to its folder)"
            raise ConfigError(f"{name} not found in {where}")
        candidate = Path(found)
    try:
        out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"{candidate} does not run: {exc}") from None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        raise ConfigError(f"cannot read the version of {candidate}: {out.strip()!r}")
    return PgTool(name, candidate, (int(match[1]), int(match[2] or 0)))


def require_for_server(name: str, server_version_num: int) -> PgTool:
    """The tool, or ConfigError when its major version is older than the server's."""
    tool = find_tool(name)
    server_major = server_version_num // 10000
    if tool.major < server_major:
        raise ConfigError(
            f"{tool.path} is version {tool.major}, older than the server (version {server_major}); "
            f"install a {name} >= {server_major} and point PG_BIN at its folder"
        )
    return tool


def child_env() -> dict[str, str]:
    """The environment a pg tool gets: what libpq may need, none of our secrets."""
    return {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith(_KEEP_PREFIXES)}


def libpq_target(url: str, *, dbname: str | None = None, app: str = "safesync") -> tuple[str, dict[str, str]]:
    """(conninfo without the password, child environment carrying it) for
    ``url``, optionally pointed at another database on the same server."""
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except Exception as exc:  # psycopg.ProgrammingError for a malformed URL
        raise ConfigError(f"invalid database URL: {redact(str(exc))}") from None
    password = params.pop("password", None)
    if dbname is not None:
        params["dbname"] = dbname
    env = child_env()
    env["PGAPPNAME"] = app
    if password:
        env["PGPASSWORD"] = str(password)
    return pg_conninfo.make_conninfo(**params), env


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: an uncommitted transaction still protects us
        pass


def spawn_client(argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start a client program that is killed if this process dies."""
    return subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent, **kwargs)
