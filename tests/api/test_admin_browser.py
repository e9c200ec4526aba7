"""The /admin dashboard in a real headless Chromium against a real API process, Redis and
SQL: log in, see one chart per credit type drawn with the data, switch a tool off and see
the next charge refused, adjust an account and see its ledger row. Every page is laid out
at 1400 and 1024 px without a card or table overflowing and without ids or timestamps
wrapping; a full-page screenshot of each page at each width is kept as an artifact."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import Engine

from meter.keys import Keys
from meter.redis_conn import sync_client
from meter.times import now_ms
from sync.flush import Flusher
from sync.models import T_PURCHASES
from sync.pricing import PriceTable, Slab, replace_prices
from tests.api.conftest import account, bearer
from tests.browser import (
    VIEWPORT_HEIGHT_PX,
    VIEWPORT_WIDTHS_PX,
    artifacts_dir,
    chromium,
    full_page_screenshot,
    set_viewport,
)

pytestmark = pytest.mark.slow

WAIT_S = 20  # a page and its charts on a loaded 2-core host
CHARGES = 4
TOOL_COST = 5
VIDEO_TYPE = "video_seconds"  # a second credit type: its charts must not mix with credits
VIDEO_CHARGES = 2
VIDEO_COST = 2
VIDEO_QUANTITY = 3
PURCHASE_MINOR = 1234
# A row of one line is its line box plus padding; a wrapped one adds a whole line box.
ONE_LINE_SLACK = 0.5  # of a line-height: room for inline code's own box, never a 2nd line

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
# Every chart drawn from canvases of a CSS selector: its unit attribute, y-axis title and
# dataset labels (null when the page has not drawn it yet).
CHARTS_JS = """
const canvases = Array.from(document.querySelectorAll(arguments[0]));
if (!canvases.length || canvases.some(c => !Chart.getChart(c))) return null;
return canvases.map(c => {
  const chart = Chart.getChart(c);
  const y = chart.options.scales.y;
  return {id: c.id, unit: c.dataset.unit || null,
          axis: y && y.title && y.title.display ? y.title.text : null,
          labels: chart.data.datasets.map(d => d.label),
          sums: chart.data.datasets.map(d => d.data.reduce((a, b) => a + b, 0))};
});
"""
# Cards, tables and the page itself wider than their box (scrollWidth > clientWidth), and
# tables reaching past their container. A table in a .scroll-x box (the ledger, whose eight
# columns need ~1090 px) scrolls inside it by design: its card must still not overflow.
OVERFLOW_JS = """
const out = [];
const name = el => el.id ? '#' + el.id : el.tagName.toLowerCase() + '.' + el.className;
const doc = document.documentElement;
if (doc.scrollWidth > doc.clientWidth)
  out.push('page ' + doc.scrollWidth + '>' + doc.clientWidth);
document.querySelectorAll('.card, table').forEach(el => {
  if (el.scrollWidth > el.clientWidth + 1)
    out.push(name(el) + ' ' + el.scrollWidth + '>' + el.clientWidth);
});
document.querySelectorAll('table').forEach(t => {
  if (t.parentElement.classList.contains('scroll-x')) return;
  const box = t.parentElement.getBoundingClientRect(), r = t.getBoundingClientRect();
  if (r.right > box.right + 1)
    out.push(name(t) + ' ends ' + (r.right - box.right) + 'px past its box');
});
return out;
"""
# Rows of the tables named that are taller than one line (an id or a time wrapped): each
# row's height against padding + one line-height of its first cell; and how many rows.
WRAPPED_ROWS_JS = """
const out = []; let rows = 0;
for (const sel of arguments[0]) {
  document.querySelectorAll(sel + ' tbody tr').forEach(tr => {
    const td = tr.querySelector('td'); if (!td || td.classList.contains('empty')) return;
    rows += 1;
    const s = getComputedStyle(td);
    const one = parseFloat(s.lineHeight) * (1 + arguments[1]) + parseFloat(s.paddingTop)
      + parseFloat(s.paddingBottom) + parseFloat(s.borderBottomWidth);
    const h = tr.getBoundingClientRect().height;
    if (h > one)
      out.push(sel + ' ' + JSON.stringify(tr.innerText.slice(0, 60)) + ' ' + h.toFixed(1) + 'px');
  });
}
return {rows: rows, wrapped: out};
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
    """Two tools of two credit types (credits, video_seconds) charged by one account, whose
    id is long (ids must not wrap), and a paid purchase; all in SQL."""
    suffix = uuid.uuid4().hex[:8].upper()
    tool, video_tool = "BROWSER_" + suffix, "BROWSER_VIDEO_" + suffix
    who = account("browser-customer-with-a-long-external-id")
    with httpx.Client(base_url=api_url, timeout=10.0) as http:
        for name, cost, credit_type in (
            (tool, TOOL_COST, "credits"),
            (video_tool, VIDEO_COST, VIDEO_TYPE),
        ):
            r = http.put(
                f"/v1/tools/{name}",
                json={"display_name": "Browser test", "cost": cost, "credit_type": credit_type},
                headers=bearer(admin_key),
            )
            assert r.status_code == 200, r.text
        for credit_type in ("credits", VIDEO_TYPE):
            r = http.post(
                f"/v1/accounts/{who}/grants",
                json={"credit_type": credit_type, "amount": 1000, "category": "paid"},
                headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 201, r.text
        charges = [{"tool": tool}] * CHARGES + [
            {"tool": video_tool, "quantity": VIDEO_QUANTITY}
        ] * VIDEO_CHARGES
        for body in charges:
            r = http.post(
                "/v1/charges",
                json={"account_id": who, **body},
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
    return {"tool": tool, "video_tool": video_tool, "account": who}


def check_layout(driver: webdriver.Chrome, page: str, row_tables: tuple[str, ...] = ()) -> None:
    """At each width: a full-page screenshot kept as an artifact, then no card or table wider
    than its box, and no row of `row_tables` taller than one line (ids and times kept whole
    on one line). Screenshots come first, so a failing layout still leaves its pictures."""
    problems: list[str] = []
    for width_px in VIEWPORT_WIDTHS_PX:
        full_page_screenshot(driver, artifacts_dir() / f"admin-{page}-{width_px}.png", width_px)
        problems += [f"{width_px}px: {p}" for p in driver.execute_script(OVERFLOW_JS)]
        if row_tables:
            found = driver.execute_script(WRAPPED_ROWS_JS, list(row_tables), ONE_LINE_SLACK)
            assert found["rows"] > 0, f"{page}: no rows in {row_tables} to check"
            problems += [f"{width_px}px: {p}" for p in found["wrapped"]]
    set_viewport(driver, VIEWPORT_WIDTHS_PX[0], VIEWPORT_HEIGHT_PX)
    assert problems == [], f"{page}: {problems}"


@pytest.fixture(scope="module")
def browser(api_url: str, admin_key: str, seeded: dict[str, str]) -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        driver.get(api_url + "/admin")
        WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.ID, "api_key")))
        assert driver.current_url.endswith("/admin/login")
        check_layout(driver, "login")
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


def _charts(driver: webdriver.Chrome, selector: str) -> list[dict[str, Any]]:
    found = WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(CHARTS_JS, selector))
    for chart in found:
        assert driver.execute_script(CANVAS_DRAWN_JS, chart["id"]), f"{chart['id']} is blank"
    return list(found)


def _credits_balance(driver: webdriver.Chrome) -> int:
    for row in driver.find_elements(By.CSS_SELECTOR, "#balances tbody tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        if cells[0] == "credits":
            return int(cells[1])
    raise AssertionError("no credits wallet shown")


def test_overview_draws_one_chart_per_credit_type(
    browser: webdriver.Chrome, api_url: str, seeded: dict[str, str]
) -> None:
    browser.get(api_url + "/admin")
    _charts(browser, "canvas")  # every chart drawn before the screenshots
    check_layout(browser, "overview", ("#top", "#holds"))
    usage = _charts(browser, "canvas.chart-usage")
    # The tools table of the same range says which credit type each tool charges.
    unit_of = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#tool-usage tbody tr"):
        cells = [
            (c.get_attribute("textContent") or "").strip()
            for c in row.find_elements(By.TAG_NAME, "td")
        ]
        unit_of[cells[0]] = cells[1]
    assert unit_of[seeded["tool"]] == "credits" and unit_of[seeded["video_tool"]] == VIDEO_TYPE
    by_unit = {c["unit"]: c for c in usage}
    for chart in usage:
        assert chart["axis"] == chart["unit"], chart  # the axis names the unit it counts
        assert {unit_of[label] for label in chart["labels"]} == {chart["unit"]}, chart
    credits_chart, video_chart = by_unit["credits"], by_unit[VIDEO_TYPE]
    ours = dict(zip(credits_chart["labels"], credits_chart["sums"], strict=True))
    assert ours[seeded["tool"]] == CHARGES * TOOL_COST
    ours = dict(zip(video_chart["labels"], video_chart["sums"], strict=True))
    assert ours[seeded["video_tool"]] == VIDEO_CHARGES * VIDEO_COST * VIDEO_QUANTITY

    liability = {c["unit"]: c for c in _charts(browser, "canvas.chart-liability")}
    for unit, chart in liability.items():
        assert chart["axis"] == unit and len(chart["labels"]) == 1, chart
    assert {"credits", VIDEO_TYPE} <= liability.keys()
    assert liability[VIDEO_TYPE]["sums"][0] > 0

    # Other modules share this SQL: the day's revenue includes ours.
    usd = browser.find_element(By.CSS_SELECTOR, 'canvas.chart-revenue[data-currency="usd"]')
    assert _wait_for_chart(browser, usd.get_attribute("id") or "", None) * 100 >= PURCHASE_MINOR


def test_favicon_is_served(api_url: str, browser: webdriver.Chrome) -> None:
    r = httpx.get(api_url + "/favicon.ico", follow_redirects=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), r.headers
    browser.get(api_url + "/admin")
    icon = browser.find_element(By.CSS_SELECTOR, 'link[rel="icon"]').get_attribute("href") or ""
    r = httpx.get(icon)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), icon


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
    check_layout(browser, "tools")

    r = httpx.post(
        api_url + "/v1/charges",
        json={"account_id": seeded["account"], "tool": tool},
        headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 403, r.text


def test_adjusting_an_account_shows_its_ledger_row(
    browser: webdriver.Chrome, api_url: str, seeded: dict[str, str], api_worker: None
) -> None:
    who = seeded["account"]
    browser.get(api_url + "/admin/accounts")
    browser.find_element(By.ID, "q").send_keys(who)
    browser.find_element(By.ID, "search").click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.LINK_TEXT, who)))
    check_layout(browser, "accounts", ("#accounts",))
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
    cells = [
        (c.get_attribute("textContent") or "").strip() for c in row.find_elements(By.TAG_NAME, "td")
    ]
    assert cells[1:4] == ["adjustment", "credits", "-15"] and "browser goodwill" in cells
    assert _credits_balance(browser) == balance_before - 15
    check_layout(browser, "account", ("#ledger", "#grants"))


def test_suspending_an_account_on_its_page_refuses_its_next_charge(
    browser: webdriver.Chrome, api_url: str, admin_key: str, meter_key: str, api_engine: Engine
) -> None:
    who = account("browser-suspended-customer")
    tool = "BROWSER_SUSPEND_" + uuid.uuid4().hex[:8].upper()  # the seeded one is switched off
    with httpx.Client(base_url=api_url, timeout=10.0) as http:
        put = http.put(
            f"/v1/tools/{tool}",
            json={"display_name": "Browser test", "cost": TOOL_COST, "credit_type": "credits"},
            headers=bearer(admin_key),
        )
        assert put.status_code == 200, put.text
        r = http.post(
            f"/v1/accounts/{who}/grants",
            json={"credit_type": "credits", "amount": 100, "category": "paid"},
            headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 201, r.text
        # Every panel of the page filled in, so the layout check sees them all.
        patch = {"rate_limits": {"*": "600/minute"}, "low_balance_thresholds": {"credits": 20}}
        r = http.patch(f"/v1/accounts/{who}", json=patch, headers=bearer(admin_key))
        assert r.status_code == 200, r.text
        sold = "browser_gems"  # a credit type sold by the unit, so a top-up can be priced
        replace_prices(api_engine, [PriceTable(sold, "usd", "graduated", 1, (Slab(1, None, 5),))])
        rule = {"threshold": 10, "credits": 100, "daily_max": 2}
        r = http.put(f"/v1/accounts/{who}/topup/{sold}", json=rule, headers=bearer(admin_key))
        assert r.status_code == 200, r.text
    browser.get(f"{api_url}/admin/accounts/{who}")
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "settings-form")))
    assert browser.find_element(By.ID, "status").text == "active"
    assert "600/minute" in browser.find_element(By.ID, "rate-limits").text
    assert browser.find_element(By.ID, "topup-rules").is_displayed()
    Select(browser.find_element(By.ID, "status-select")).select_by_value("suspended")
    limit = browser.find_element(By.ID, "overdraft_limit")
    limit.clear()
    limit.send_keys("30")
    browser.find_element(By.ID, "email-input").send_keys("billing@example.com")
    browser.find_element(By.ID, "metadata-input").send_keys('{"tier": "gold"}')
    browser.find_element(By.ID, "save-settings").click()
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "settings-saved")))
    assert browser.find_element(By.ID, "status").text == "suspended"
    assert browser.find_element(By.ID, "overdraft-limit").text == "30"
    assert browser.find_element(By.ID, "email").text == "billing@example.com"
    check_layout(browser, "account-settings", ("#balances",))

    r = httpx.post(
        api_url + "/v1/charges",
        json={"account_id": who, "tool": tool},
        headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 403 and r.json()["type"].endswith(":account-suspended"), r.text


def test_sync_health_lays_out(browser: webdriver.Chrome, api_url: str) -> None:
    browser.get(api_url + "/admin/sync")
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "buckets")))
    check_layout(browser, "sync")


def test_webhooks_page_lays_out_and_resends(
    browser: webdriver.Chrome, api_url: str, api_engine: Engine
) -> None:
    """A failed delivery is listed with its error; Resend (a real form post) answers with
    the page saying it is being resent, and the delivery is pending again."""
    from sync.db import write_transaction
    from sync.webhooks import create_endpoint, delete_endpoint, emit
    from sync.webhooks_deliveries import list_deliveries
    from sync.webhooks_send import deliver

    endpoint, _ = create_endpoint(api_engine, "test", "http://127.0.0.1:9/hooks", ["hold.expired"])
    who = f"browser-{uuid.uuid4().hex[:8]}"
    write_transaction(
        api_engine, lambda conn: emit(conn, "hold.expired", who, {}, f"{who}:hold.expired")
    )
    (d,) = list_deliveries(api_engine, endpoint_id=endpoint.id)
    deliver(api_engine, d.id, now_ms(), delays_s=())  # port 9 (discard) refuses: failed
    try:
        browser.get(api_url + "/admin/webhooks?status=failed")
        row = WebDriverWait(browser, WAIT_S).until(
            ec.presence_of_element_located((By.ID, f"delivery-{d.id}"))
        )
        assert "ConnectError" in row.text and "failed" in row.text
        check_layout(browser, "webhooks", ("#endpoints",))  # a delivery row holds a button
        row.find_element(By.CSS_SELECTOR, "button.resend").click()
        WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "saved")))
        assert d.id in browser.find_element(By.ID, "saved").text
        (again,) = list_deliveries(api_engine, endpoint_id=endpoint.id)
        assert again.status == "pending" or again.attempts == 2
    finally:
        delete_endpoint(api_engine, "test", endpoint.id)
