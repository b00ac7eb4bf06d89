"""A real PgBouncer (Debian's ``pgbouncer``, installed by ``ensure_tool``)
in front of the test server, in one pool mode: how hosted users connect when
they paste a pooled URL (Supabase's port 6543 and Neon's ``-pooler`` host are
transaction mode).

    with PgBouncer(server_url, "transaction", ignore_options=True) as bouncer:
        url = bouncer.url(database_url)

``ignore_options`` sets ``ignore_startup_parameters = options``, what users
add so that clients sending ``options`` can connect at all; without it
PgBouncer refuses those clients ("unsupported startup parameter: options").
Every database name routes to the upstream server (``*`` fallback), the
test role logs in with trust, as on the server itself.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.system_tools import ensure_tool

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class PgBouncer:
    def __init__(self, upstream_url: str, mode: str, *, ignore_options: bool = False) -> None:
        self.binary = ensure_tool("pgbouncer", "pgbouncer")
        info = psycopg.conninfo.conninfo_to_dict(upstream_url)
        self.upstream = (info.get("host", LOOPBACK), info.get("port", "5432"))
        self.user = info["user"]
        self.mode, self.ignore_options = mode, ignore_options
        self.port = _free_port()
        self.home = Path(tempfile.mkdtemp(prefix="safesync-pgbouncer-"))
        self.process: subprocess.Popen | None = None

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by the pooler's."""
        info = psycopg.conninfo.conninfo_to_dict(database_url)
        auth = f"{info['user']}:{info['password']}@" if info.get("password") else f"{info['user']}@"
        return f"postgresql://{auth}{LOOPBACK}:{self.port}/{info['dbname']}"

    def _config(self) -> Path:
        host, port = self.upstream
        (self.home / "userlist.txt").write_text(f'"{self.user}" ""\n')
        ignored = "extra_float_digits" + (", options" if self.ignore_options else "")
        ini = self.home / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {LOOPBACK}\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.home}\n"
            "auth_type = trust\n"
            f"auth_file = {self.home / 'userlist.txt'}\n"
            f"pool_mode = {self.mode}\n"
            f"ignore_startup_parameters = {ignored}\n"
            f"logfile = {self.home / 'pgbouncer.log'}\n"
            f"pidfile = {self.home / 'pgbouncer.pid'}\n"
        )
        return ini

    def __enter__(self) -> "PgBouncer":
        ini = self._config()
        command = [self.binary, str(ini)]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            nobody = pwd.getpwnam("nobody")
            os.chown(self.home, nobody.pw_uid, nobody.pw_gid)
            for path in self.home.iterdir():
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            command[1:1] = ["-u", "nobody"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.process.stdout.read().decode(errors='replace')[-500:]}")
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("pgbouncer did not listen in time")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.home, ignore_errors=True)
