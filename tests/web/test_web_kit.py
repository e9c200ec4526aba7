"""The frontend kit (web/) in a real headless Chromium against a real `creditmeter api`: the
example page (examples/web, built by `make web`) signs in through its backend
(examples/web/server.py), shows the account's balance in its header over the SSE route, and
that number ticks down with every charge made over HTTP, whoever makes it; the buy card
prices a top-up with the account's plan discount, and checkout reaches (the loopback fake)
Stripe and sends the browser to the session's URL. The page is screenshotted (the README's
docs/web-example.png comes from here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine

from meter import Meter
from meter.embedded import free_port
from meter.keys import Keys
from sync.loader import SqlLoader
from sync.purchases import Purchases
from tests import stripe_fake as sf
from tests.api.conftest import bearer
from tests.api.server import creditmeter_bin
from tests.browser import REPO, artifacts_dir, chromium

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

EXAMPLE_DIST = REPO / "examples" / "web" / "dist"
SCREENSHOT = REPO / "docs" / "web-example.png"
# The README's screenshot is rewritten only when asked: `UPDATE_SCREENSHOTS=1 pytest tests/web`
# (every run keeps one in the test artifacts).
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
SCREENSHOT_PX = (1200, 640)  # the page's height is then fitted to its content
WAIT_S = 15  # a page's first render, sign-in and stream on a loaded 2-core host
TICK_POLL_S = 0.01  # how often the DOM is read while waiting for a balance to change
RECONNECT_S = 20.0  # backoff (0.5 s doubling) while the backend restarts, then the snapshot
TICK_S_MAX = 2.0  # a charge must show in the header within this (measured: well under)
SERVER_START_S = 30.0
UVICORN = (sys.executable, "-m", "uvicorn", "examples.web.server:app")
PAID = 500  # plus the example catalog's welcome grant of 100 promotional credits
WELCOME = 100
IMAGE_GEN_COST = 10  # examples/catalog.toml
CHARGES = 4
HOLD = 25  # credits reserved by an open hold: shown as held, not available
TOP_UP = 1500  # credits: 999 x 10 + 501 x 8 = 13998 cents, less pro's 20% (2799)
TOP_UP_TOTAL = "$111.99"


@pytest.fixture(scope="module")
def built_page() -> Path:
    """`make web`: npm ci, the kit and the example page (a no-op when they are up to date)."""
    subprocess.run(["make", "-s", "web"], cwd=REPO, check=True)
    assert (EXAMPLE_DIST / "index.html").is_file()
    return EXAMPLE_DIST


@pytest.fixture(scope="module")
def customer(
    api_url: str, api_env: dict[str, str], admin_key: str, api_engine: Engine, redis_url: str
) -> str:
    """An account of the example catalog with 500 paid credits and the pro plan (20% off)."""
    subprocess.run(
        [creditmeter_bin(), "catalog", "apply", str(REPO / "examples" / "catalog.toml")],
        env=api_env,
        check=True,
        capture_output=True,
    )
    who = f"web-{uuid.uuid4().hex[:10]}"
    r = httpx.post(
        f"{api_url}/v1/accounts/{who}/grants",
        json={"credit_type": "credits", "amount": PAID, "category": "paid"},
        headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    keys = Keys(prefix=api_env["CREDITMETER_KEY_PREFIX"], buckets=4)
    meter = Meter.from_url(redis_url, keys=keys, loader=SqlLoader(api_engine, keys))
    now_s = int(time.time())
    sub = sf.subscription(
        customer="cus_web",
        price_id="price_pro_monthly",
        current_period_start=now_s,
        current_period_end=now_s + 30 * 86400,
        metadata={"account_id": who},
    )
    event = sf.event("customer.subscription.created", sub)
    outcome, _ = Purchases(api_engine, meter, flush_bucket=lambda _bucket: None).apply(event)
    assert "pro" in outcome, outcome
    return who


class ExampleApp:
    """examples/web/server.py under uvicorn on one port, as the app's backend in front of the
    API; it can be killed and started again on the same port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*UVICORN, "--port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(self.url + "/", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the example app did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash: open streams drop at once, nothing is closed cleanly."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def example_app(
    built_page: Path, api_url: str, meter_key: str, customer: str, api_data_dir: Path
) -> Iterator[ExampleApp]:
    env = {
        **os.environ,
        "CREDITMETER_API_URL": api_url,
        "CREDITMETER_API_KEY": meter_key,
        "EXAMPLE_ACCOUNT_ID": customer,
        "EXAMPLE_DIST": str(built_page),
    }
    app = ExampleApp(env, api_data_dir / "example.log")
    app.start()
    try:
        yield app
    finally:
        app.stop()


def stream_status(driver: webdriver.Chrome) -> str | None:
    return driver.find_element(By.CSS_SELECTOR, ".balances").get_attribute("data-status")


def available(driver: webdriver.Chrome) -> int | None:
    """The header's available credits, or None before the first snapshot."""
    found = driver.find_elements(By.CSS_SELECTOR, "[data-testid='available-credits']")
    return int(found[0].text.replace(",", "")) if found else None


def wait_available(driver: webdriver.Chrome, expected: int, timeout_s: float) -> float:
    """Seconds until the header shows `expected`; fails naming what it showed instead."""
    start = time.monotonic()
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=TICK_POLL_S).until(
            lambda d: available(d) == expected
        )
    except Exception as exc:
        raise AssertionError(f"header shows {available(driver)}, expected {expected}") from exc
    return time.monotonic() - start


def charge(api_url: str, meter_key: str, customer: str) -> int:
    """One IMAGE_GEN charge over HTTP, as any service of the app makes them; the available
    credits after it."""
    r = httpx.post(
        f"{api_url}/v1/charges",
        json={"account_id": customer, "tool": "IMAGE_GEN"},
        headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    available_after: int = r.json()["available"]
    return available_after


def test_the_header_balance_ticks_down_with_each_charge_and_checkout_reaches_stripe(
    example_app: ExampleApp,
    api_url: str,
    meter_key: str,
    customer: str,
    fake_stripe: sf.FakeStripe,
) -> None:
    with chromium() as driver:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": SCREENSHOT_PX[0],
                "height": SCREENSHOT_PX[1],
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        driver.get(example_app.url)
        balance = PAID + WELCOME
        wait_available(driver, balance, WAIT_S)
        WebDriverWait(driver, WAIT_S).until(lambda d: stream_status(d) == "open")

        ticks_s = []
        for _ in range(CHARGES):
            balance -= IMAGE_GEN_COST
            assert charge(api_url, meter_key, customer) == balance
            ticks_s.append(wait_available(driver, balance, TICK_S_MAX))
        print(f"header updated {[round(t * 1000) for t in ticks_s]} ms after each charge")

        # The page's own paid feature charges through its backend; the header follows too.
        driver.find_element(By.ID, "generate").click()
        balance -= IMAGE_GEN_COST
        wait_available(driver, balance, TICK_S_MAX)
        rows = driver.find_elements(By.CSS_SELECTOR, "#activity tbody tr")
        assert len(rows) == CHARGES + 1

        # A hold (a long generation reserving credits) moves credits from available to held.
        r = httpx.post(
            f"{api_url}/v1/holds",
            json={"account_id": customer, "tool": "LLM_CHAT", "amount": HOLD},
            headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 201, r.text
        balance -= HOLD
        wait_available(driver, balance, TICK_S_MAX)
        held = driver.find_element(By.CSS_SELECTOR, "[data-credit-type='credits'] .held")
        assert held.text == f"· {HOLD} held"

        # The backend crashes; a charge made meanwhile shows once the page has reconnected
        # (with backoff) and read the snapshot.
        example_app.kill()
        WebDriverWait(driver, WAIT_S).until(lambda d: stream_status(d) == "reconnecting")
        balance -= IMAGE_GEN_COST
        assert charge(api_url, meter_key, customer) == balance
        example_app.start()
        restarted_s = time.monotonic()
        wait_available(driver, balance, RECONNECT_S)
        WebDriverWait(driver, WAIT_S).until(lambda d: stream_status(d) == "open")
        print(f"caught up {time.monotonic() - restarted_s:.1f} s after the backend was back")

        # Below the catalog's minimum: creditmeter's problem reaches the page as the error.
        credits_input = driver.find_element(By.ID, "credits")
        credits_input.clear()
        credits_input.send_keys("9")
        WebDriverWait(driver, WAIT_S).until(
            lambda d: (
                d.find_elements(By.ID, "buy-error")
                and d.find_element(By.ID, "buy-error").text
                == "credits: the minimum purchase of credits is 10"
            )
        )
        assert not driver.find_element(By.ID, "checkout").is_enabled()

        credits_input.clear()
        credits_input.send_keys(str(TOP_UP))
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.find_element(By.ID, "quote-total").text == TOP_UP_TOTAL
        )
        assert "Plan pro \u221220%" in driver.find_element(By.ID, "buy").text

        height_px = driver.execute_script(
            "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)"
        )
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": SCREENSHOT_PX[0],
                "height": height_px,
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        driver.save_screenshot(str(artifacts_dir() / "web-example.png"))
        if UPDATE_SCREENSHOTS:
            driver.save_screenshot(str(SCREENSHOT))

        # Stripe's real page is not for a test: the navigation is blocked, not sent.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*checkout.stripe.com*"]})
        driver.find_element(By.ID, "checkout").click()
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.current_url.startswith("https://checkout.stripe.com/c/pay/cs_test_")
        )
    (created,) = fake_stripe.calls("POST", "/v1/checkout/sessions")
    assert created.params["client_reference_id"] == customer
    (item,) = created.params["line_items"]
    assert item["price_data"]["unit_amount"] == "11199"
    assert created.params["metadata"]["credits"] == str(TOP_UP)
