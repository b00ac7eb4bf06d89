"""pytest fixtures for calendar tests: a running fake, settings pointing at it.

Import them into a test module: ``from tests.fake_calendar.fixtures import *``.
"""

from __future__ import annotations

import textwrap
from typing import Iterator

import pytest

from .server import FakeCalendar

FAST_CALENDAR = """
[calendar]
database = "prod"
calendar_ids = ["primary"]
retry_base_delay_s = 0.001
retry_max_delay_s = 0.01
http_timeout_s = 5
delete_guard_min_rows = 5
notify_debounce_s = 0
"""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCalendar]:
    """The fake Google Calendar, and beside it a fake QStash (``QSTASH_URL``,
    ``fake.qstash``): notifications publish their syncs there, never to the
    real QStash."""
    from tests import sentinels
    from tests.fake_qstash import FakeQStash

    server = FakeCalendar().start()
    server.qstash = FakeQStash(sentinels.SECRETS["QSTASH_TOKEN"]).start()
    monkeypatch.setenv("QSTASH_URL", server.qstash.url)
    monkeypatch.setenv("SAFESYNC_GOOGLE_API_ROOT", server.root)
    monkeypatch.setenv("SAFESYNC_GOOGLE_CREDENTIALS", server.authorized_user_json())
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("SAFESYNC_GOOGLE_SUBJECT", raising=False)
    try:
        yield server
    finally:
        server.qstash.stop()
        server.stop()


@pytest.fixture
def qstash(fake: FakeCalendar):
    """The fake QStash beside the fake Google (what notifications published)."""
    return fake.qstash


@pytest.fixture
def cal_settings(fake: FakeCalendar, make_db, write_settings):
    """Settings with a fresh calendar database and fast retries."""
    from safesync.functions.calendar import reads

    reads.clear()

    def factory(extra: str = ""):
        return write_settings({"prod": make_db()}, textwrap.dedent(FAST_CALENDAR) + textwrap.dedent(extra))

    return factory


@pytest.fixture
def services():
    """Local stand-ins for deployed Cloud Run services (see services.py)."""
    from .services import Services

    running = Services()
    try:
        yield running
    finally:
        running.stop()
