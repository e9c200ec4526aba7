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
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
WINDOW: Final = "1400,1100"  # the first page's size; set_viewport then sets exact widths
# The widths the dashboard must lay out without overflow: a desktop and a small laptop/tablet.
VIEWPORT_WIDTHS_PX: Final = (1400, 1024)
VIEWPORT_HEIGHT_PX: Final = 900  # before a full-page screenshot grows it to the page's height
PAGE_LOAD_TIMEOUT_S: Final = 30  # a loaded 2-core host renders the overview in well under this
RESIZE_WAIT_S: Final = 10  # Chart.js redraws on its next animation frame after a resize
REPO: Final = Path(__file__).resolve().parent.parent

# True once every Chart.js chart on the page has the width of its container (it resizes on
# a ResizeObserver callback, one frame after the viewport changed).
CHARTS_SETTLED_JS: Final = """
if (typeof Chart === 'undefined') return true;
return Array.from(document.querySelectorAll('canvas')).every(c => {
  const chart = Chart.getChart(c);
  return !chart || Math.abs(chart.width - c.parentElement.clientWidth) <= 1;
});
"""


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def set_viewport(driver: webdriver.Chrome, width_px: int, height_px: int) -> None:
    """Sets the page's viewport exactly (the window size would include the browser's frame)
    and waits until the charts have followed it."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width_px, "height": height_px, "deviceScaleFactor": 1, "mobile": False},
    )
    WebDriverWait(driver, RESIZE_WAIT_S).until(lambda d: d.execute_script(CHARTS_SETTLED_JS))


def full_page_screenshot(driver: webdriver.Chrome, path: Path, width_px: int) -> None:
    """A PNG of the whole page at `width_px`: the viewport is grown to the page's height."""
    set_viewport(driver, width_px, VIEWPORT_HEIGHT_PX)
    height_px = int(driver.execute_script("return document.documentElement.scrollHeight"))
    set_viewport(driver, width_px, max(height_px, VIEWPORT_HEIGHT_PX))
    driver.save_screenshot(str(path))
    set_viewport(driver, width_px, VIEWPORT_HEIGHT_PX)


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
