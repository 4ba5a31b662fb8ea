"""A real headless Chromium for the page tests, driven by Playwright.

Playwright comes from PyPI with its own driver; the browser is Debian's `chromium` (`make test`
installs it when missing), never one that `playwright install` would download. `CHROMIUM_PATH`
names another binary. Screenshots go to `docs/screenshots/`, overwritten on each run, so a person
can look at what the pages show.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Debian's binary; /usr/bin/chromium is a wrapper script that works too but prints noise.
CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    """The Chromium binary to drive: `CHROMIUM_PATH`, else Debian's, else one on PATH."""
    chosen = os.environ.get("CHROMIUM_PATH")
    if chosen:
        return chosen
    for candidate in CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit; the test is skipped only when there is none."""
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no Chromium found: `make test` installs Debian's chromium "
            "(apt-get install chromium fonts-liberation), or set CHROMIUM_PATH"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as `docs/screenshots/<name>.png` (replacing an older one)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path
