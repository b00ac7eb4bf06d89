"""The status page in a real browser: Debian's Chromium, headless, driven
by Playwright, against ``safesync serve`` in its own process on loopback.
A person logs in with the token, reads the page, logs out; another opens a
one-time link from ``safesync status --link``. Screenshots go to the test's
temp folder (``status.png``, ``login.png``)."""

from __future__ import annotations

import json
import subprocess
import sys
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sentinels
from tests.live_server import LiveServer
from tests.status_world import status_world  # noqa: F401  (fixture)
from tests.system_tools import ensure_tool

TOKEN = sentinels.SECRETS["SAFESYNC_API_TOKEN"]
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    path = ensure_tool("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # headless, with a fresh profile in a temp folder of its own
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(status_world) -> Iterator[tuple[str, Path]]:
    """``safesync serve`` on localhost (a secure context, as HTTPS would be
    in production), its access log in a file; yields (page URL, log)."""
    with LiveServer(env=os.environ.copy()) as serve:
        yield f"http://localhost:{serve.port}/status", serve.log_path


def test_a_person_logs_in_reads_the_page_and_logs_out(chromium, server, tmp_path: Path) -> None:
    url, log = server
    context = chromium.new_context()
    page = context.new_page()
    first = page.goto(url)
    assert first.status == 401 and page.title() == "safesync status: log in"
    page.screenshot(path=str(tmp_path / "login.png"))
    page.fill('input[name="token"]', TOKEN)
    with page.expect_navigation():
        page.click('button[type="submit"]')
    assert page.url == url  # no token, no code in the address bar
    assert page.title().startswith("safesync status: ")
    cookie = next(c for c in context.cookies() if c["name"] == "__Host-safesync-status")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it

    attention = page.locator("section.attention li").all_inner_texts()
    assert attention and any("push channel expires" in item for item in attention)
    assert page.locator("h3", has_text="prod").count() == 1
    assert page.locator("svg polyline").count() == 1
    assert len(page.get_attribute("svg polyline", "points").split()) == 5
    body = page.inner_text("body")
    for expected in ("Last run of every job", "content_sync", "rows written", "conflicts", "push channel expires", "last restore drill: ✓"):
        assert expected in body, expected
    page.set_viewport_size({"width": 1200, "height": 1800})
    page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
    assert (tmp_path / "status.png").stat().st_size > 10_000

    with page.expect_navigation():
        page.click("text=Log out")
    assert page.title() == "safesync status: log in"
    assert not [c for c in context.cookies() if c["name"] == "__Host-safesync-status"]
    context.close()
    assert TOKEN not in log.read_text()  # the access log never saw the token


def test_a_one_time_link_opens_the_page_once(chromium, server) -> None:
    url, _log = server
    printed = subprocess.run(
        [sys.executable, "-m", "safesync.functions.cli", "status", "--link", "--url", url, "--json"],
        capture_output=True, text=True, check=True,
    )
    link = json.loads(printed.stdout)["link"]
    context = chromium.new_context()
    page = context.new_page()
    page.goto(link)
    assert page.url == url and "link=" not in page.url  # the code left the address bar
    assert page.locator("section.attention").count() == 1
    context.close()
    other = chromium.new_context().new_page()
    answer = other.goto(link)
    assert answer.status == 401 and "already used" in other.inner_text("body")
    other.context.close()
