"""The console's headless-browser tests: Debian's chromium + chromium-driver through selenium
(no browser download; ``.ci/run`` installs both). Screenshots go to ``test-artifacts/<name>/``
(gitignored) for a person to look at."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LEADLINE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LEADLINE_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Outside CI a machine without chromium skips these tests; in CI a missing browser fails them.
needs_chromium = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)) and not os.environ.get("CI"),
    reason="needs Debian chromium + chromium-driver (.ci/run installs them)",
)


@contextlib.contextmanager
def chromium(*, width: int = 1400, height: int = 1100) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, folder: str, name: str) -> Path:
    path = ARTIFACTS / folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
