"""Finding PostgreSQL client programs (pg_dump, pg_restore, psql) and
checking they are new enough for a server.

Looked up in ``$PG_BIN`` first, then ``PATH``. A pg_dump older than the
server it dumps fails (or silently misses features), so every job that
shells out checks the major version before it writes anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


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
