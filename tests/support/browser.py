"""A headless Chromium driven by Playwright, for end-to-end tests of the dashboard.

Debian's /usr/bin/chromium is used (the machine is offline: no Playwright browser download).
Screenshots go to the test's temp dir and are copied to `out/e2e-screenshots/<test>/`, the
test artefacts CI keeps.

    with chromium_page(tmp_path, "dashboard") as browser:
        browser.page.goto(url)
        browser.shot("login")
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage", "--disable-gpu"]
ARTEFACTS = Path(__file__).resolve().parents[2] / "out" / "e2e-screenshots"
VIEWPORT = {"width": 1366, "height": 768}
"""A laptop screen: the dashboard must be readable at this size."""


@dataclass
class Browser:
    page: Page
    directory: Path
    artefacts: Path
    shots: list[Path] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        """Screenshot the whole page as `NN-name.png` in both places."""
        path = self.directory / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.artefacts.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, self.artefacts / path.name)
        self.shots.append(path)
        return path


@contextlib.contextmanager
def chromium_page(tmp_path: Path, name: str, *, timeout_ms: float = 20_000) -> Iterator[Browser]:
    """A fresh page of a headless Chromium at 1366x768; skips the test when Chromium is missing."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make install installs it)")
    directory = tmp_path / "screenshots"
    directory.mkdir(exist_ok=True)
    artefacts = ARTEFACTS / name
    shutil.rmtree(artefacts, ignore_errors=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            context.set_default_timeout(timeout_ms)
            page = context.new_page()
            # Confirm dialogs ("Promote release #2?") are answered yes, as a person would.
            page.on("dialog", lambda dialog: dialog.accept())
            yield Browser(page, directory, artefacts)
        finally:
            browser.close()


def bundle_page(script: Path, directory: Path, *, timeout_s: float = 60.0) -> None:
    """`directory/index.html`, a page loading `script` bundled for the browser by esbuild (from the
    npm packages next to `script`, tests/node) as `flags.js`."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(script.parent / "node_modules" / ".bin" / "esbuild"),
            str(script),
            "--bundle",
            "--format=iife",
            "--platform=browser",
            f"--outfile={directory / 'flags.js'}",
        ],
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )
    (directory / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>flags</title>'
        '<link rel="icon" href="data:,">'  # no favicon request (its 404 would be a console error)
        '<script src="flags.js"></script></head><body><main id="app">flags</main></body></html>'
    )
