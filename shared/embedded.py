"""An embedded PostgreSQL server for the demo and the test suite.

Uses the server, ``pg_dump`` and ``pg_restore`` that the ``pgserver`` wheel
ships, but starts the cluster itself: listening on a loopback TCP port (so
tests can put a throttling proxy in front of it and tools connect exactly as
they would to a remote database), with durability switched off for speed.

PostgreSQL refuses to run as root, so under root the cluster is owned by an
unprivileged system user (``pgserver``, as pgserver itself does), created on
first use. Several processes may start clusters at the same moment (pytest
workers, parallel demos), so creating that user is serialised by an
exclusive file lock and re-checked under it. As any other user the cluster
simply runs as that user.

Independent clusters on one machine must never be confused with each other:
a port picked as free can be taken before the postmaster binds it, so a
start that loses its port is retried on a new one, and every started server
is checked to be *this* data directory before anyone connects to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

SERVICE_USER = "pgserver"


def bin_dir() -> Path:
    """The ``bin`` folder of pgserver's bundled PostgreSQL."""
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded PostgreSQL needs the pgserver package: pip install 'safesync[demo]'")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_path_for(path: Path) -> None:
    """Let another user traverse every parent of ``path`` (needed when the
    cluster runs as the service user but lives under root's folders)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IXOTH | stat.S_IROTH
        if mode != wanted:
            parent.chmod(wanted)


USER_LOCK = Path(tempfile.gettempdir()) / "safesync-embedded-useradd.lock"
_USERADD_EXISTS = 9  # useradd: "username already in use"
_START_ATTEMPTS = 5


def ensure_system_user(name: str) -> tuple[int, int]:
    """(uid, gid) of system user ``name``, created if missing.

    Safe under concurrency: the lookup is repeated under an exclusive lock,
    so of N processes racing only one calls ``useradd`` and every one sees
    the same entry; a user created meanwhile by someone else is accepted.
    """
    import fcntl
    import pwd

    try:
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        pass
    with open(USER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            done = subprocess.run(
                ["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                capture_output=True, text=True,
            )
            if done.returncode not in (0, _USERADD_EXISTS):
                raise RuntimeError(f"useradd {name} failed ({done.returncode}): {done.stderr.strip()}")
            entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _shared_tmp() -> str:
    """A temp folder every user can traverse: /tmp (sticky, world-writable)
    even when TMPDIR points somewhere private."""
    try:
        mode = os.stat("/tmp").st_mode
        if mode & stat.S_ISVTX and mode & stat.S_IWOTH:
            return "/tmp"
    except OSError:
        pass
    return tempfile.gettempdir()


def _service_user(name: str) -> tuple[int, int] | None:
    """The owner the cluster must run as: ``name`` under root, else ourselves."""
    return ensure_system_user(name) if os.geteuid() == 0 else None


@dataclass
class EmbeddedPostgres:
    """A throwaway cluster: ``start()``, use ``url(dbname)``, ``stop()``.

    ``os_user`` is the system user that owns the cluster when we run as
    root (tests use a throwaway name to exercise its creation). ``user`` is
    the bootstrap superuser's name (a Supabase-like cluster's is
    ``supabase_admin``).
    """

    data_dir: Path
    port: int = 0
    user: str = "postgres"
    os_user: str = SERVICE_USER
    bin: Path | None = None  # another installation's bin folder (default: pgserver's)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self._pick_port = not self.port  # a port we chose may be lost to a race; one we were given may not
        self.port = self.port or free_port()
        self._owner = _service_user(self.os_user)
        self.bin = Path(self.bin) if self.bin else bin_dir()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {}
        if self._owner:
            kwargs = {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
        # Temporary files, not pipes: pg_ctl's background postmaster would keep
        # a pipe open and make this call hang.
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run(
                [str(self.bin / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT, cwd="/", **kwargs
            )
            out.seek(0)
            text = out.read().decode(errors="replace")
        if check and proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {text}")
        return proc

    @property
    def home(self) -> Path:
        """The cluster's real folder (``data_dir`` may be a link to it): what
        the server's own processes are given, since the service user may not
        traverse the link's parents."""
        return self.data_dir.resolve()

    @property
    def _log(self) -> Path:
        return self.home / "server.log"

    def start(self) -> "EmbeddedPostgres":
        if self._owner:
            _open_path_for(self.bin)
            self._place_for_owner()
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.home / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.home), "-U", self.user, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")
        for attempt in range(_START_ATTEMPTS):
            logged = self._log.stat().st_size if self._log.exists() else 0
            if self._pg_ctl_start().returncode == 0:
                break
            said = self._log.read_bytes()[logged:].decode(errors="replace") if self._log.exists() else ""
            lost_port = "could not bind" in said
            if not (lost_port and self._pick_port and attempt + 1 < _START_ATTEMPTS):
                raise RuntimeError(f"pg_ctl start failed: {said.strip()[-2000:]}")
            self.port = free_port()  # another process took it between free_port() and bind()
        self._check_identity()
        return self

    def _place_for_owner(self) -> None:
        """Under root the service user runs the cluster and must reach its
        files, but ``data_dir``'s parents may be private — a root home, or
        pytest's ``/tmp/pytest-of-root``, which every new pytest session
        resets to 0700 (so opening them would break again, and would weaken
        them). The files therefore live in a private folder of their own
        directly under the shared temp folder, and ``data_dir`` links to it."""
        if self.data_dir.is_symlink():
            return  # placed by an earlier start
        if (self.data_dir / "PG_VERSION").exists():  # a cluster made in place before
            _open_path_for(self.data_dir.parent)  # parents only: PostgreSQL refuses a readable data dir
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():
            self.data_dir.rmdir()  # an empty folder made for us (a non-empty one is an error, not ours to remove)
        home = Path(tempfile.mkdtemp(prefix="safesync-pg-", dir=_shared_tmp()))
        os.chown(home, *self._owner)
        self.data_dir.symlink_to(home, target_is_directory=True)

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.home} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB "
            "-c max_locks_per_transaction=256"
        )
        return self._run("pg_ctl", "-D", str(self.home), "-w", "-t", "60", "-o", options, "-l", str(self._log), "start", check=False)

    def _check_identity(self) -> None:
        """The server answering on our port must be ours: its data directory
        is ``self.data_dir``. Anything else would let two independent runs
        work on each other's databases."""
        import psycopg

        with psycopg.connect(self.url(), connect_timeout=10) as conn:
            served = conn.execute("select setting from pg_settings where name = 'data_directory'").fetchone()[0]
        if Path(served).resolve() != self.home:
            self.stop("immediate")
            raise RuntimeError(f"port {self.port} is served by another cluster ({served}), not {self.data_dir}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.home), "-w", "-m", mode, "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def destroy(self) -> None:
        real = self.home
        self.stop("immediate")
        shutil.rmtree(real, ignore_errors=True)
        if self.data_dir.is_symlink():
            self.data_dir.unlink()
