"""Storage unavailable → the job fails, clearly, before touching any database.

Three ways storage goes away: a local folder nobody can write to (``chattr
+i`` as root: even root cannot create files in it), and a ``gs://`` or an
``s3://`` URL whose endpoint is down (a closed loopback port). The storage
probe gives up within seconds, so a dead endpoint fails a run fast (the time
to fail is a figure).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.fake_calendar.fixtures import fake  # noqa: F401  (fixture)
from tests.fsutil import read_only

from .conftest import make_world

AREA = "storage unavailable"


def _jobs():
    from safesync.functions.backup.jobs import run_create
    from safesync.functions.calendar.sync import run_sync
    from safesync.functions.content_sync import content_sync
    from safesync.functions.staging_clone import clone

    return {
        "backup create": lambda s: run_create(s, "prod", "manual", trigger={"via": "reliability"}),
        "content sync": lambda s: content_sync(s, "sync"),
        "staging clone": lambda s: clone(s),
        "calendar full sync": lambda s: run_sync(s, "full"),
    }


JOB_NAMES = ["backup create", "content sync", "staging clone", "calendar full sync"]


@pytest.fixture
def seeded_fake(fake):
    """The fake Google Calendar with events a sync would write."""
    from tests.fake_calendar.helpers import NOW, event, gid

    for i in range(10):
        fake.store.put_event("primary", event(gid(i), f"Event {i}", NOW + timedelta(days=1, hours=i)))
    return fake


def _check(t, name: str, answer, before, after, how: str) -> None:
    error = str(answer.body.get("error", "")) + " " + str(answer.body.get("report", {}).get("summary", ""))
    t.check(answer.status >= 500 and answer.exit_code == 1 and "storage" in error.lower(),
            f"{name} with {how}: answered {answer.status} (exit {answer.exit_code}): {error[:200]}", strict=False)
    changed_before = t.changed
    try:
        t.unchanged(before, after, f"{name} with {how}")
    except AssertionError:
        pass
    t.check(t.changed == changed_before, f"{name} with {how}: a database or storage changed", strict=False)


@pytest.mark.parametrize("name", JOB_NAMES)
def test_unwritable_storage_folder(pg_server, make_db, write_settings, monkeypatch, tmp_path, seeded_fake, tally, name: str) -> None:
    t = tally(AREA)
    folder = tmp_path / "frozen"
    world = make_world(pg_server, make_db, write_settings, monkeypatch, storage_url=f"file://{folder}", google_root=seeded_fake.root)
    before = world.state()
    with read_only(folder):
        answer = _jobs()[name](world.settings)
        after = world.state()
    _check(t, name, answer, before, after, "an unwritable storage folder")
    assert t.unexpected == 0 and t.changed == 0, "\n".join(t.notes)


def _point_at_a_dead_endpoint(backend: str, monkeypatch) -> str:
    """Set the environment for ``backend`` to a closed loopback port; returns
    the storage URL."""
    dead = "http://127.0.0.1:9"
    if backend == "gcs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", dead)
        return "gs://reliability-down/prefix"
    from tests.s3_emulator import TEST_CREDENTIALS

    for var, value in {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": dead, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return "s3://reliability-down/prefix"


@pytest.mark.parametrize("backend", ["gcs", "s3"])
@pytest.mark.parametrize("name", JOB_NAMES)
def test_cloud_endpoint_down(pg_server, make_db, write_settings, monkeypatch, seeded_fake, tally, name: str, backend: str) -> None:
    t = tally(AREA)
    url = _point_at_a_dead_endpoint(backend, monkeypatch)
    world = make_world(pg_server, make_db, write_settings, monkeypatch, storage_url=url, google_root=seeded_fake.root)
    before = world.state(storage=False)
    start = time.monotonic()
    answer = _jobs()[name](world.settings)
    t.figure(f"{backend} down: s to fail", round(time.monotonic() - start, 1))
    _check(t, name, answer, before, world.state(storage=False), f"its {backend.upper()} endpoint down")
    assert t.unexpected == 0 and t.changed == 0, "\n".join(t.notes)
