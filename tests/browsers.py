"""Headless Chromium for the browser tests: the system's own build, never a download."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

from servers import ROOT

#: Debian's chromium; the browser tests skip where it is missing.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Screenshots the tests take, as they saw the page (not committed).
ARTIFACTS = ROOT / "tests" / "artifacts"
#: Flags for a sandboxed root user on a machine without network access.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launched_chromium() -> Iterator[Any]:
    """A Playwright `Browser` on the system's Chromium, for a fixture to yield from."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
