"""Pages in a real browser: headless Chromium (the system's, driven by Playwright).

Skipped where Chromium or Playwright is missing; CI installs both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from browsers import ARTIFACTS, CHROMIUM, launched_chromium
from servers import subprocess_server

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="the system has no chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launched_chromium()


def test_dashboard_follows_sse_and_websocket(browser: object, tmp_path: Path) -> None:
    with subprocess_server("examples.dashboard:app") as (_, port):
        page = browser.new_page()  # type: ignore[attr-defined]
        try:
            page.goto(f"http://127.0.0.1:{port}/")
            # Three named `metrics` events through EventSource, three WebSocket pushes.
            page.wait_for_function(
                "Number(document.getElementById('sse').dataset.readings || 0) >= 3",
                timeout=15_000,
            )
            page.wait_for_function(
                "Number(document.getElementById('ws').dataset.readings || 0) >= 3",
                timeout=15_000,
            )
            assert page.inner_text("#sse .status") == "live"
            assert page.inner_text("#ws .status") == "live"
            assert int(page.inner_text("#sse .seq")) >= 3
            assert page.inner_text("#ws .viewers") == "1"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            page.close()
