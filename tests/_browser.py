"""Open an HTML file in a real headless Chromium and report what a reader's browser would see.

Chromium comes from the system (Debian's ``chromium`` package; ``.ci/run`` installs it) and is
driven by Playwright's Python client, which downloads nothing. Without a browser the report tests
skip, unless ``CALIX_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = os.environ.get("CALIX_CHROMIUM") or shutil.which(name)
        if path:
            return path
    if os.environ.get("CALIX_REQUIRE_BROWSER") == "1":
        pytest.fail("no Chromium found, but CALIX_REQUIRE_BROWSER=1 requires the browser tests")
    pytest.skip("no Chromium on this machine (install Debian's chromium to run this test)")
    raise AssertionError  # unreachable


def load_page(path: Path) -> dict[str, Any]:
    """Console errors, page errors and the decode state of every <img> of ``path``."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), headless=True, args=_FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                """async () => Promise.all(Array.from(document.images).map(async (img) => {
                    let decoded = true;
                    try { await img.decode(); } catch (e) { decoded = false; }
                    return {decoded, complete: img.complete, width: img.naturalWidth,
                            height: img.naturalHeight};
                }))""")
            title = page.title()
            text = page.inner_text("body")
        finally:
            browser.close()
    return {"errors": errors, "images": images, "title": title, "text": text}
