"""The /admin dashboard in a real headless Chromium against a real API process, Redis and
SQL: log in, see the charts drawn with the data, switch a tool off and see the next charge
refused, adjust an account and see its ledger row. Screenshots are kept as artifacts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import Engine

from meter.keys import Keys
from meter.ops import now_ms
from meter.redis_conn import sync_client
from sync.flush import Flusher
from sync.models import T_PURCHASES
from tests.api.conftest import account, bearer
from tests.browser import artifacts_dir, chromium

pytestmark = pytest.mark.slow

WAIT_S = 20  # a page and its charts on a loaded 2-core host
CHARGES = 4
TOOL_COST = 5
PURCHASE_MINOR = 1234

# Sum of one chart's dataset that carries `label`, or null when the chart or label is absent.
DATASET_SUM_JS = """
const chart = Chart.getChart(document.getElementById(arguments[0]));
if (!chart) return null;
const ds = chart.data.datasets.find(d => arguments[1] === null || d.label === arguments[1]);
return ds ? ds.data.reduce((a, b) => a + b, 0) : null;
"""
# Whether the canvas has drawn pixels (not a blank, transparent bitmap).
CANVAS_DRAWN_JS = """
const c = document.getElementById(arguments[0]);
const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
for (let i = 3; i < px.length; i += 4) { if (px[i] !== 0) return true; }
return false;
"""


@pytest.fixture(scope="module")
def seeded(
    api_url: str,
    admin_key: str,
    meter_key: str,
    api_prefix: str,
    redis_url: str,
    api_engine: Engine,
) -> dict[str, str]:
    """A tool with CHARGES charges of TOOL_COST by one account, a paid purchase, all in SQL."""
    tool = "BROWSER_" + uuid.uuid4().hex[:8].upper()
    who = account("browser")
    with httpx.Client(base_url=api_url, timeout=10.0) as http:
        r = http.put(
            f"/v1/tools/{tool}",
            json={"display_name": "Browser test", "cost": TOOL_COST, "credit_type": "credits"},
            headers=bearer(admin_key),
        )
        assert r.status_code == 200, r.text
        r = http.post(
            f"/v1/accounts/{who}/grants",
            json={"credit_type": "credits", "amount": 1000, "category": "paid"},
            headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 201, r.text
        for _ in range(CHARGES):
            r = http.post(
                "/v1/charges",
                json={"account_id": who, "tool": tool},
                headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 201, r.text
    client = sync_client(redis_url)
    try:
        Flusher(client, api_engine, Keys(prefix=api_prefix, buckets=4)).drain()
    finally:
        client.close()
    with api_engine.begin() as conn:  # what a Stripe checkout leaves behind (sync/purchases.py)
        conn.execute(
            T_PURCHASES.insert(),
            {
                "id": uuid.uuid4().hex,
                "account_id": who,
                "credit_type": "credits",
                "credits": 100,
                "pack_id": "credits-small",
                "amount_minor": PURCHASE_MINOR,
                "currency": "usd",
                "status": "paid",
                "source": "pack",
                "created_at_ms": now_ms(),
            },
        )
    return {"tool": tool, "account": who}


@pytest.fixture(scope="module")
def browser(api_url: str, admin_key: str, seeded: dict[str, str]) -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        driver.get(api_url + "/admin")
        WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.ID, "api_key")))
        assert driver.current_url.endswith("/admin/login")
        driver.find_element(By.ID, "api_key").send_keys(admin_key)
        driver.find_element(By.ID, "login").click()
        WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.ID, "logout")))
        yield driver


def _wait_for_chart(driver: webdriver.Chrome, canvas_id: str, label: str | None) -> float:
    total = WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script(DATASET_SUM_JS, canvas_id, label)
    )
    assert driver.execute_script(CANVAS_DRAWN_JS, canvas_id), f"{canvas_id} is blank"
    return float(total)


def _credits_balance(driver: webdriver.Chrome) -> int:
    for row in driver.find_elements(By.CSS_SELECTOR, "#balances tbody tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        if cells[0] == "credits":
            return int(cells[1])
    raise AssertionError("no credits wallet shown")


def test_overview_draws_the_charts_with_the_data(
    browser: webdriver.Chrome, api_url: str, seeded: dict[str, str]
) -> None:
    browser.get(api_url + "/admin")
    assert _wait_for_chart(browser, "chart-usage", seeded["tool"]) == CHARGES * TOOL_COST
    # Other modules share this SQL: the day's revenue and liability include ours.
    usd = browser.find_element(By.CSS_SELECTOR, 'canvas.chart-revenue[data-currency="usd"]')
    assert _wait_for_chart(browser, usd.get_attribute("id"), None) * 100 >= PURCHASE_MINOR
    assert _wait_for_chart(browser, "chart-liability", "credits") > 0
    tools_table = browser.find_element(By.ID, "tool-usage").text
    assert seeded["tool"] in tools_table
    browser.save_screenshot(str(artifacts_dir() / "admin-overview.png"))


def test_switching_a_tool_off_rejects_the_next_charge(
    browser: webdriver.Chrome, api_url: str, meter_key: str, seeded: dict[str, str]
) -> None:
    tool = seeded["tool"]
    browser.get(api_url + "/admin/tools")
    row = browser.find_element(By.ID, f"tool-{tool}")
    assert row.find_element(By.CLASS_NAME, "state").text == "active"
    row.find_element(By.CLASS_NAME, "toggle").click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "saved")))
    row = browser.find_element(By.ID, f"tool-{tool}")
    assert row.find_element(By.CLASS_NAME, "state").text == "off"
    browser.save_screenshot(str(artifacts_dir() / "admin-tools.png"))

    r = httpx.post(
        api_url + "/v1/charges",
        json={"account_id": seeded["account"], "tool": tool},
        headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 403, r.text


def test_adjusting_an_account_shows_its_ledger_row(
    browser: webdriver.Chrome, api_url: str, seeded: dict[str, str]
) -> None:
    who = seeded["account"]
    browser.get(api_url + "/admin/accounts")
    browser.find_element(By.ID, "q").send_keys(who)
    browser.find_element(By.ID, "search").click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.LINK_TEXT, who)))
    browser.find_element(By.LINK_TEXT, who).click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "adjust-form")))
    balance_before = _credits_balance(browser)

    chosen = Select(browser.find_element(By.ID, "credit_type")).first_selected_option
    assert chosen.text == "credits"  # the wallet it uses, whatever the catalog lists first
    browser.find_element(By.ID, "amount").send_keys("-15")
    browser.find_element(By.ID, "reason").send_keys("browser goodwill")
    browser.find_element(By.ID, "adjust").click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "saved")))

    entry_id = browser.find_element(By.CSS_SELECTOR, "#saved code").text
    row = browser.find_element(By.CSS_SELECTOR, f'#ledger tr[data-entry="{entry_id}"]')
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == ["adjustment", "credits", "-15"] and "browser goodwill" in cells
    assert _credits_balance(browser) == balance_before - 15
    browser.save_screenshot(str(artifacts_dir() / "admin-account.png"))
