"""The tests' browser: Debian's headless Chromium driven by playwright (never a downloaded one).

``open_browser()`` starts ``/usr/bin/chromium`` through playwright's ``executable_path`` with a
fixed viewport, device scale, colour scheme, time zone and locale, motion reduced; it is a
context manager that always closes the browser (and so every Chromium process) on the way out,
test failure included. ``Page.requests`` lists every request the page made besides its own
document, so a test can assert the page fetched nothing.

``pixel_difference(a, b)`` is the share of pixels of two PNGs that differ by more than a small
per-channel tolerance (antialiasing), 1.0 if the sizes differ.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

CHROMIUM = os.environ.get("PROBECORE_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1100, "height": 900}


def require_browser() -> None:
    """Skip (naming what is missing) unless playwright and Debian's Chromium are installed."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@dataclass
class Page:
    page: Any
    requests: list[str] = field(default_factory=list)

    def open(self, url: str) -> None:
        """Go to *url* and wait until it has loaded; requests other than *url* are recorded."""
        self.page.on("request", lambda request: request.url != url and self.requests.append(request.url))
        self.page.goto(url, wait_until="load")

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def texts(self, selector: str) -> list[str]:
        return [element.inner_text() for element in self.page.query_selector_all(selector)]

    def screenshot(self, *, full_page: bool = False) -> bytes:
        return self.page.screenshot(full_page=full_page, animations="disabled", caret="hide")


@contextmanager
def open_browser() -> Iterator[Page]:
    """A fresh page in headless Chromium; the browser is closed whatever happens."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            # --no-sandbox: Chromium refuses to run as root with its sandbox. The rest keep
            # rendering the same from run to run (no GPU, no font hinting differences).
            args=["--no-sandbox", "--disable-gpu", "--font-render-hinting=none", "--disable-lcd-text",
                  "--force-color-profile=srgb", "--hide-scrollbars"])
        try:
            context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, locale="en-US",
                                          timezone_id="UTC", reduced_motion="reduce", color_scheme="light")
            yield Page(context.new_page())
        finally:
            browser.close()


def pixel_difference(a: bytes, b: bytes, *, channel_tolerance: int = 40) -> float:
    """Share of pixels whose colour differs by more than *channel_tolerance* in any channel."""
    from PIL import Image, ImageChops

    first = Image.open(io.BytesIO(a)).convert("RGB")
    second = Image.open(io.BytesIO(b)).convert("RGB")
    if first.size != second.size:
        return 1.0
    diff = ImageChops.difference(first, second)
    bands = diff.split()
    mask = bands[0].point(lambda v: 255 if v > channel_tolerance else 0)
    for band in bands[1:]:
        mask = ImageChops.lighter(mask, band.point(lambda v: 255 if v > channel_tolerance else 0))
    changed = mask.histogram()[255]
    return changed / (first.size[0] * first.size[1])
