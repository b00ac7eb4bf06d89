"""The test harness: a real PostgreSQL, fresh databases per test, settings
written as a user would write them, sentinel secrets everywhere.

PostgreSQL is the embedded server shipped by ``pgserver`` (started once per
session, on loopback TCP) unless ``TEST_DATABASE_URL`` names a server to use
(a URL to its maintenance database; the role must be able to CREATE DATABASE).
"""

from __future__ import annotations

import gzip
import os
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from tests import sentinels
from tests.gcs_emulator import gcs_bucket_url, gcs_emulator  # noqa: F401  (fixtures)
from tests.s3_emulator import s3_bucket_url, s3_emulator  # noqa: F401  (fixtures)

# Secrets are set before anything imports the project (import-time reads).
for _name, _value in sentinels.SECRETS.items():
    os.environ[_name] = _value
os.environ["SAFESYNC_PUBLIC_URL"] = sentinels.PUBLIC_URL
os.environ.pop("SAFESYNC_CONFIG", None)
os.environ.pop("SAFESYNC_NOTIFY_URL", None)
# What client binaries answered (shared.probecache) is remembered in a folder of this run, not the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="safesync-test-cache-")


class PgServer:
    """A server the tests may create and drop databases on."""

    def __init__(self, admin_url: str, embedded=None) -> None:
        self.admin_url = admin_url
        self.embedded = embedded
        self.info = psycopg.conninfo.conninfo_to_dict(admin_url)
        self.created: list[str] = []
        self._ensure_password_role()

    def _ensure_password_role(self) -> None:
        """A login role with the sentinel password: URLs the jobs see carry a
        password, so the secrets check proves it never leaks."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = 'safesync_test'").fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("create role safesync_test login superuser password {}").format(sql.Literal(sentinels.DB_PASSWORD))
                )

    def url(self, dbname: str, *, user: str = "safesync_test", password: str | None = sentinels.DB_PASSWORD) -> str:
        host = self.info.get("host", "127.0.0.1")
        port = self.info.get("port", "5432")
        auth = f"{user}:{password}@" if password else f"{user}@"
        return f"postgresql://{auth}{host}:{port}/{dbname}"

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = sql.SQL("create database {} owner safesync_test").format(sql.Identifier(name))
            if template:
                query += sql.SQL(" template {}").format(sql.Identifier(template))
            conn.execute(query)
        self.created.append(name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def bin_dir(self) -> Path | None:
        return self.embedded.bin if self.embedded else None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield PgServer(external)
        return
    from safesync.shared.embedded import EmbeddedPostgres

    # Not under pytest's basetemp: pytest prunes old basetemps at start-up,
    # which would pull the data directory from under another running session.
    import shutil
    import tempfile

    data_root = Path(tempfile.mkdtemp(prefix="safesync-pg-"))
    embedded = EmbeddedPostgres(data_root / "data").start()
    # pg_dump/pg_restore for the jobs come from the same install as the server.
    os.environ.setdefault("PG_BIN", str(embedded.bin))
    try:
        yield PgServer(embedded.url(), embedded)
    finally:
        embedded.destroy()
        shutil.rmtree(data_root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _tools_of_the_supabase_server(request, monkeypatch):
    """A test on the PostgreSQL 18 platform runs its jobs with that server's
    own pg_dump, pg_restore and psql (``PG_BIN``): the 18 bundle is never on
    the tools' search path."""
    if "supabase" in request.fixturenames:
        from tests.fixtures.supabase_platform import ensure_pg15

        cluster = request.getfixturevalue("supabase")
        if cluster.server.bin != ensure_pg15():
            monkeypatch.setenv("PG_BIN", str(cluster.server.bin))


@pytest.fixture(scope="session", params=["pg15", "pg18"])
def supabase(request):
    """A Supabase platform cluster built from Supabase's own migrations;
    tests connect as its non-superuser ``postgres`` role
    (``tests/fixtures/supabase_platform``). Each test runs on PostgreSQL 15
    (Debian's) and 18 (``tests/pg_next.py``): hosted projects run 15 and 17."""
    from tests.fixtures.supabase_platform import ensure_next, supabase_fixture

    yield from supabase_fixture(ensure_next() if request.param == "pg18" else None)


@pytest.fixture(scope="session")
def pg_next():
    """A PostgreSQL 18 cluster (``tests/pg_next.py``); connect as its superuser."""
    from tests.pg_next import server

    yield from server()


@pytest.fixture
def make_db(pg_server: PgServer) -> Iterator[Callable[..., str]]:
    """Factory: ``make_db()`` → URL of a new empty database (dropped after)."""
    created: list[str] = []

    def factory(name: str | None = None, template: str | None = None) -> str:
        url = pg_server.create_database(name, template)
        created.append(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        return url

    yield factory
    for name in created:
        pg_server.drop_database(name)


@pytest.fixture
def write_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a safesync.toml in a temp folder, point SAFESYNC_CONFIG at it,
    set each database's env var, and return loaded Settings.

    ``write_settings({"dev": url, "prod": url}, extra_toml)``; storage
    defaults to a local folder in the temp dir.
    """
    from safesync.shared.config import load_settings

    def factory(databases: dict[str, str], extra: str = "", storage_url: str | None = None):
        lines = ["[databases]"]
        for name, url in databases.items():
            var = f"{name.upper()}_DATABASE_URL"
            monkeypatch.setenv(var, url)
            lines.append(f'{name} = "{var}"')
        lines += ["", "[storage]", f'url = "{storage_url or "file://./backups"}"', ""]
        path = tmp_path / "safesync.toml"
        path.write_text("\n".join(lines) + "\n" + textwrap.dedent(extra))
        monkeypatch.setenv("SAFESYNC_CONFIG", str(path))
        return load_settings(path)

    return factory


@pytest.fixture
def lms(pg_server, make_db, write_settings):
    """(settings factory, dev_url, prod_url) for a dev/prod pair of the LMS
    fixture; the factory takes the extra TOML of [content_sync], TOML to put
    after it (per-table options), other URLs, and lms_config_toml's options."""
    from tests.fixtures.lms import lms_config_toml, lms_database

    dev = lms_database(pg_server, make_db, variant="dev")
    prod = lms_database(pg_server, make_db, variant="prod")

    def settings(extra: str = "", tail: str = "", urls: dict | None = None, **kw):
        return write_settings(urls or {"dev": dev, "prod": prod}, lms_config_toml(extra=extra, **kw) + tail)

    return settings, dev, prod


# --- the secrets proof ----------------------------------------------------------
# Every log line the project writes during the suite goes to a file; at the
# very end the controller greps those logs and every file the tests left in
# the session's temp folder (reports, run files, manifests, backups) for the
# sentinel secrets, and fails the session if any appears.

LOG_DIR_ENV = "SAFESYNC_TEST_LOG_DIR"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    import logging
    import tempfile

    from safesync.shared import log

    if not _is_worker(config):  # workers inherit the folder through the environment
        os.environ[LOG_DIR_ENV] = tempfile.mkdtemp(prefix="safesync-test-logs-")
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    handler = logging.FileHandler(Path(os.environ[LOG_DIR_ENV]) / f"{worker}.jsonl")
    handler.setFormatter(log.JsonFormatter())
    # it is the suite's JSON handler: log.setup() (the CLI's, the functions'
    # entry point's) then adds none and keeps DEBUG, so every line is scanned
    handler._safesync = True  # type: ignore[attr-defined]
    logger = logging.getLogger("safesync")
    logger.addHandler(handler)
    logger.setLevel("DEBUG")


def _leaks(root: Path, needles: list[bytes], scanned: dict[str, int]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink() or any((p / "PG_VERSION").exists() for p in path.parents if p != root.parent):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if path.suffix == ".gz":  # content sync's undo logs: read what they hold
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):  # a cut or damaged one (tests make those): as stored
                pass
        scanned["files"] += 1
        scanned["log_lines"] += data.count(b"\n") if path.suffix == ".jsonl" else 0
        found += [f"{path}: {needle.decode()[:12]}…" for needle in needles if needle in data]
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_worker(session.config) or exitstatus not in (0, 1):
        return
    needles = [n.encode() for n in sentinels.leak_needles()]
    roots = [Path(os.environ[LOG_DIR_ENV])]
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        roots.append(factory.getbasetemp())
    scanned = {"files": 0, "log_lines": 0}
    leaks = [leak for root in roots if root.exists() for leak in _leaks(root, needles, scanned)]
    # read by the reliability table (tests/reliability/table.py)
    session.config._safesync_secrets_scan = {**scanned, "needles": len(needles), "leaks": leaks}
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter:
            reporter.write_line("SECRETS LEAKED into logs or stored files:", red=True)
            for leak in leaks[:20]:
                reporter.write_line(f"  {leak}", red=True)
    elif reporter:
        reporter.write_line(f"secrets check: no sentinel secret in logs or stored files ({', '.join(str(r) for r in roots)})")
