"""An embedded PostgreSQL server for the demo and the test suite.

Uses the server, ``pg_dump`` and ``pg_restore`` that the ``pgserver`` wheel
ships, but starts the cluster itself: listening on a loopback TCP port (so
tests can put a throttling proxy in front of it and tools connect exactly as
they would to a remote database), with durability switched off for speed.
PostgreSQL refuses to run as root, so under root the cluster is owned by an
unprivileged ``pgserver`` system user, as pgserver itself does.
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


def _service_user() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVICE_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


@dataclass
class EmbeddedPostgres:
    """A throwaway cluster: ``start()``, use ``url(dbname)``, ``stop()``."""

    data_dir: Path
    port: int = 0
    user: str = "postgres"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.port = self.port or free_port()
        self._owner = _service_user()
        self.bin = bin_dir()

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

    def start(self) -> "EmbeddedPostgres":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._owner:
            _open_path_for(self.bin)
            # Parents only: PostgreSQL refuses a data directory others can read.
            _open_path_for(self.data_dir.parent)
            os.chown(self.data_dir, *self._owner)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB "
            "-c max_locks_per_transaction=256"
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-o", options, "-l", str(self.data_dir / "server.log"), "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", mode, "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
