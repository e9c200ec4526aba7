"""Debian's Chromium driven through chromedriver (Selenium), headless, for dashboard tests.

`make test` installs the packages `chromium` and `chromium-driver` when they are missing
(see the Makefile's `browser` target). Screenshots go to TEST_ARTIFACTS_DIR (default
`test-artifacts/` at the repository root), which CI can keep.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
WINDOW: Final = "1400,1100"  # wide enough for the overview's three charts side by side
PAGE_LOAD_TIMEOUT_S: Final = 30  # a loaded 2-core host renders the overview in well under this
REPO: Final = Path(__file__).resolve().parent.parent


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "Chromium is missing: `make test` installs Debian's chromium and chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
