"""Fixtures of the reliability proof: the figures collector (``tally``) and a
complete deployment (``world``) every area can aim at.

The root fixtures (``pg_server``, ``make_db``, ``write_settings``, sentinel
secrets) come from ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest

from tests import sentinels
from tests.fixtures.lms import lms_config_toml, lms_database

from .figures import Tally
from .state import world_state

BEARER = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}"}
ADMIN = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_ADMIN_TOKEN']}"}

# Calendar settings for a deployment under test: fast retries, a generous rate
# limit (load), Google pointed at a closed loopback port (nothing may reach
# the internet; a job that unexpectedly calls Google fails at once).
WORLD_TOML = """
[backup]
databases = ["prod"]
compress_level = 1

[staging_clone]
source = "dev"
target = "staging"
schemas = ["public"]

[calendar]
database = "prod"
calendar_ids = ["primary"]
retry_attempts = 1
retry_base_delay_s = 0.001
retry_max_delay_s = 0.01
http_timeout_s = 2
rate_limit_per_minute = 1000000
"""


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Callable[[str], Tally]]:
    """``tally("area")`` → the test's Tally for that area (saved at teardown)."""
    made: dict[str, Tally] = {}

    def factory(area: str) -> Tally:
        if area not in made:
            made[area] = Tally(area, test=request.node.nodeid)
        return made[area]

    yield factory
    for t in made.values():
        t.save()


@dataclass
class World:
    """dev, staging and prod (LMS content + users, prod also holds the
    calendar schema), local storage, settings naming them all."""

    urls: dict[str, str]
    settings: Any
    toml: str
    extra: dict[str, Any] = field(default_factory=dict)

    def state(self, *, storage: bool = True) -> dict[str, Any]:
        return world_state(self.urls, self.settings if storage else None)

    def client(self):
        from safesync.functions.serve import create_app

        return create_app().test_client()


def make_world(
    pg_server, make_db, write_settings, monkeypatch, *, extra_toml: str = "", storage_url: str | None = None,
    google_root: str = "http://127.0.0.1:9",
) -> World:
    """Build a World with the root fixtures' factories (or stand-ins with the
    same signatures, for a module-scoped world). ``extra_toml`` lines without
    a section header land in ``[calendar]`` (the last section)."""
    from safesync.functions.calendar.schema import migrate
    from safesync.shared.db import connect

    urls = {
        "dev": lms_database(pg_server, make_db, variant="dev"),
        "staging": lms_database(pg_server, make_db, variant="prod"),
        "prod": lms_database(pg_server, make_db, variant="prod"),
    }
    with connect(urls["prod"], autocommit=True) as conn:
        migrate(conn)
    monkeypatch.setenv("SAFESYNC_GOOGLE_API_ROOT", google_root)
    toml = lms_config_toml() + textwrap.dedent(WORLD_TOML) + textwrap.dedent(extra_toml)
    settings = write_settings(urls, toml, storage_url=storage_url)
    from safesync.functions.calendar import reads

    reads.clear()
    return World(urls, settings, toml)


@pytest.fixture
def world(pg_server, make_db, write_settings, monkeypatch) -> World:
    """A fresh deployment for a test that changes it (faults, delivery)."""
    return make_world(pg_server, make_db, write_settings, monkeypatch)


@pytest.fixture(scope="module")
def shared_world(pg_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One deployment for a whole module of tests that must change nothing
    (bad input, auth): building one costs seconds, and a test that did change
    it fails on its own fingerprints anyway."""
    from safesync.shared.config import load_settings

    folder = tmp_path_factory.mktemp("world")
    created: list[str] = []
    with pytest.MonkeyPatch.context() as mp:

        def make_db(name: str | None = None, template: str | None = None) -> str:
            url = pg_server.create_database(name, template)
            created.append(url.rsplit("/", 1)[1])
            return url

        def write_settings(databases: dict[str, str], extra: str = "", storage_url: str | None = None):
            lines = ["[databases]"]
            for name, url in databases.items():
                mp.setenv(f"{name.upper()}_DATABASE_URL", url)
                lines.append(f'{name} = "{name.upper()}_DATABASE_URL"')
            lines += ["", "[storage]", f'url = "{storage_url or "file://./backups"}"', ""]
            path = folder / "safesync.toml"
            path.write_text("\n".join(lines) + "\n" + extra)
            mp.setenv("SAFESYNC_CONFIG", str(path))
            return load_settings(path)

        try:
            yield make_world(pg_server, make_db, write_settings, mp)
        finally:
            for name in created:
                pg_server.drop_database(name)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment a CLI subprocess gets: ours (sentinels, config) plus
    ``extra``; bytecode off so runs do not race on __pycache__."""
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **extra}
