"""The test harness: a real PostgreSQL, fresh databases per test, settings
written as a user would write them, sentinel secrets everywhere.

PostgreSQL is the embedded server shipped by ``pgserver`` (started once per
session, on loopback TCP) unless ``TEST_DATABASE_URL`` names a server to use
(a URL to its maintenance database; the role must be able to CREATE DATABASE).
"""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from tests import sentinels
from tests.gcs_emulator import gcs_bucket_url, gcs_emulator  # noqa: F401  (fixtures)

# Secrets are set before anything imports the project (import-time reads).
for _name, _value in sentinels.SECRETS.items():
    os.environ[_name] = _value
os.environ["SAFESYNC_PUBLIC_URL"] = sentinels.PUBLIC_URL
os.environ.pop("SAFESYNC_CONFIG", None)
os.environ.pop("SAFESYNC_NOTIFY_URL", None)


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
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield PgServer(external)
        return
    from safesync.shared.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data").start()
    # pg_dump/pg_restore for the jobs come from the same install as the server.
    os.environ.setdefault("PG_BIN", str(embedded.bin))
    try:
        yield PgServer(embedded.url(), embedded)
    finally:
        embedded.destroy()


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
