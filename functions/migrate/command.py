"""Running the team's own migration command (``prisma migrate deploy``,
``alembic upgrade head``, …) against one database.

- The command runs without a shell (``shlex`` split; wrap it in
  ``sh -c '…'`` if you need one) in the config file's folder.
- It sees the database only through ``DATABASE_URL``. Every configured
  database's variable, any other variable whose value holds a PostgreSQL
  URL (``DIRECT_URL``…), safesync's own secrets and libpq's ``PG*``
  connection variables are removed from its environment, so a rehearsal on
  the scratch database cannot reach production by another name.
- ``PGOPTIONS`` carries ``lock_timeout`` / ``statement_timeout``: tools
  built on libpq (psql, psycopg, SQLAlchemy/alembic, Django) get the same
  long-running guards as SQL files.
- It is killed (its whole process group) after ``command_timeout_minutes``.
- Its stdout+stderr are captured (the last lines are kept) and redacted: the
  target URL and its password never reach a report.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from psycopg import conninfo

from safesync.shared.errors import ConfigError
from safesync.shared.log import redact

TAIL_LINES = 60
# Any other variable holding a PostgreSQL URL (DIRECT_URL, SHADOW_DATABASE_URL,
# a JDBC url): the tool may read it instead of DATABASE_URL — Prisma's
# ``directUrl`` does for ``migrate deploy`` — and a rehearsal would then
# migrate that database (production), not the scratch one.
_POSTGRES_URL = re.compile(r"postgres(?:ql)?://", re.IGNORECASE)
_SAFESYNC_SECRETS = ("SAFESYNC_", "QSTASH_", "VERCEL_WEBHOOK_SECRET", "GOOGLE_APPLICATION_CREDENTIALS")
_LIBPQ_TARGETING = (
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGOPTIONS", "PGAPPNAME",
)  # fmt: skip


@dataclass
class CommandResult:
    argv: list[str]
    exit_code: int | None  # None: killed after the timeout
    duration_s: float
    output: str  # last lines of stdout+stderr, redacted
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def error(self) -> str:
        if self.timed_out:
            return f"command killed after the timeout ({self.duration_s:.0f}s)"
        if self.exit_code is not None and self.exit_code < 0:
            return f"command killed by signal {signal.Signals(-self.exit_code).name}"
        return f"command exited with code {self.exit_code}"

    def details(self) -> dict:
        return {
            "argv": self.argv,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "duration_s": self.duration_s,
            "output_tail": self.output,
        }


def split(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"migrate.command cannot be parsed: {exc}") from None
    if not argv:
        raise ConfigError("migrate.command is empty")
    return argv


def command_env(url: str, database_vars: list[str], lock_timeout: str, statement_timeout: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment minus every secret and database pointer, plus the
    target as ``DATABASE_URL`` and the timeouts in ``PGOPTIONS``."""
    base = os.environ if base is None else base
    env = {
        k: v
        for k, v in base.items()
        if k not in database_vars
        and not k.startswith(_SAFESYNC_SECRETS)
        and k not in _LIBPQ_TARGETING
        and not _POSTGRES_URL.search(v)
    }
    env["DATABASE_URL"] = url
    env["PGOPTIONS"] = f"-c lock_timeout={lock_timeout.replace(' ', '')} -c statement_timeout={statement_timeout.replace(' ', '')}"
    return env


def _scrub(text: str, url: str) -> str:
    password = conninfo.conninfo_to_dict(url).get("password")
    text = text.replace(url, "$DATABASE_URL")
    if password and len(str(password)) >= 4:
        text = text.replace(str(password), "***")
    return redact(text)


def run_command(command: str, url: str, *, cwd: Path, env: dict[str, str], timeout_s: float) -> CommandResult:
    """Run the migration command to its end (or the timeout)."""
    argv = split(command)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"migrate.command cannot start: {argv[0]}: {exc.strerror}") from None

    def drain() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            tail.append(raw.decode("utf-8", errors="replace").rstrip())

    reader = threading.Thread(target=drain, name="migrate-command-output", daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
    except BaseException:
        _kill_group(proc)
        raise
    reader.join(timeout=10)
    output = _scrub("\n".join(tail), url)
    return CommandResult(argv, None if timed_out else proc.returncode, round(time.perf_counter() - started, 3), output, timed_out)


def _kill_group(proc: subprocess.Popen) -> None:
    """TERM the command's process group, KILL it if still there after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
