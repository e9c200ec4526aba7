"""Low-balance thresholds over HTTP against a real API process and a real `creditmeter
worker`: PATCH /v1/accounts/{id} and the dashboard's settings form set and remove them
(audited), GET shows them, bad ones are 422 problem+json, and charges crossing one bring
exactly one signed balance.low to a loopback receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from meter.bounds import CREDITS_MAX
from sync.models import T_AUDIT
from tests.api.conftest import account, bearer, idem, wait_until
from tests.api.test_admin_dashboard import csrf_of, login
from tests.sync.webhook_receiver import Receiver, delete_all_endpoints

DELIVERED_WITHIN_S = 30.0  # the cron sweep runs every 5 s; the worker may still be starting
PROBLEM = "application/problem+json"


@pytest.fixture
def funded(http: httpx.Client, admin_key: str) -> str:
    acct = account("low")
    r = http.post(
        f"/v1/accounts/{acct}/grants",
        json={"credit_type": "credits", "amount": 100, "category": "paid"},
        headers={**bearer(admin_key), **idem()},
    )
    assert r.status_code == 201, r.text
    return acct


def _patch(http: httpx.Client, key: str, acct: str, body: Any) -> httpx.Response:
    return http.patch(f"/v1/accounts/{acct}", json=body, headers=bearer(key))


def test_patch_sets_and_removes_thresholds_and_get_shows_them(
    http: httpx.Client, admin_key: str, read_key: str, funded: str, api_engine: Engine
) -> None:
    r = _patch(http, admin_key, funded, {"low_balance_thresholds": {"credits": 40, "gems": 5}})
    assert r.status_code == 200, r.text
    assert r.json()["low_balance_thresholds"] == {"credits": 40, "gems": 5}
    got = http.get(f"/v1/accounts/{funded}", headers=bearer(read_key))
    assert got.json()["low_balance_thresholds"] == {"credits": 40, "gems": 5}
    r = _patch(http, admin_key, funded, {"low_balance_thresholds": {"gems": None}})
    assert r.json()["low_balance_thresholds"] == {"credits": 40}
    with api_engine.connect() as conn:
        details = conn.scalars(
            select(T_AUDIT.c.detail)
            .where(T_AUDIT.c.target == funded, T_AUDIT.c.action == "account.threshold")
            .order_by(T_AUDIT.c.id)
        ).all()
    assert [json.loads(d) for d in details] == [
        {"credit_type": "credits", "kind": "low", "threshold": 40},
        {"credit_type": "gems", "kind": "low", "threshold": 5},
        {"credit_type": "gems", "kind": "low", "threshold": None},
    ]


@pytest.mark.parametrize(
    "thresholds",
    [
        {"credits": 0},
        {"credits": -5},
        {"credits": 1.5},
        {"credits": "10"},
        {"credits": CREDITS_MAX + 1},
        {"Credits": 5},
        {"a-b": 5},
        {f"ct{i}": 1 for i in range(33)},
        ["credits", 5],
        None,
    ],
)
def test_a_bad_threshold_is_a_422_problem_and_changes_nothing(
    http: httpx.Client, admin_key: str, funded: str, thresholds: Any
) -> None:
    r = _patch(http, admin_key, funded, {"low_balance_thresholds": thresholds})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert any("low_balance_thresholds" in e["field"] for e in r.json()["errors"]), r.json()
    got = http.get(f"/v1/accounts/{funded}", headers=bearer(admin_key))
    assert got.json()["low_balance_thresholds"] == {}


def test_an_unknown_account_is_404_and_gets_no_threshold(
    http: httpx.Client, admin_key: str
) -> None:
    r = _patch(http, admin_key, account("never"), {"low_balance_thresholds": {"credits": 5}})
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)


@pytest.fixture
def receiver(api_engine: Engine) -> Iterator[Receiver]:
    delete_all_endpoints(api_engine)
    r = Receiver(port=0).start()
    yield r
    r.stop()
    delete_all_endpoints(api_engine)


def test_charges_crossing_the_threshold_send_one_signed_balance_low(
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    funded: str,
    tool: str,
    api_worker: None,
    receiver: Receiver,
) -> None:
    created = http.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "events": ["balance.low", "balance.depleted"]},
        headers=bearer(admin_key),
    )
    assert created.status_code == 201, created.text
    receiver.secret = created.json()["secret"]
    assert _patch(http, admin_key, funded, {"low_balance_thresholds": {"credits": 45}}).is_success
    for _ in range(8):  # 100 -> 20 by 10: crosses 45 once (50 -> 40)
        r = http.post(
            "/v1/charges",
            json={"account_id": funded, "tool": tool},
            headers={**bearer(meter_key), **idem()},
        )
        assert r.status_code == 201, r.text
    wait_until(lambda: len(receiver.received) >= 1, DELIVERED_WITHIN_S)
    time.sleep(1)  # a second event would have come with the same flush
    (got,) = receiver.received
    assert got.verified
    body = got.json()
    assert body["type"] == "balance.low"
    fields = ("account_id", "credit_type", "available", "threshold")
    assert {k: body["data"][k] for k in fields} == {
        "account_id": funded,
        "credit_type": "credits",
        "available": 40,
        "threshold": 45,
    }


def test_the_dashboard_shows_sets_and_removes_a_threshold(
    api_url: str, admin_key: str, read_key: str, http: httpx.Client, funded: str
) -> None:
    with httpx.Client(base_url=api_url, timeout=10) as admin:
        assert login(admin, admin_key).status_code == 303
        page = admin.get(f"/admin/accounts/{funded}")
        assert 'id="low-balance">none<' in page.text and 'name="low:credits"' in page.text
        url, token = f"/admin/accounts/{funded}/settings", csrf_of(page.text)
        form = {"csrf_token": token, "status": "active", "overdraft_limit": "0"}
        bad = admin.post(url, data={**form, "low:credits": "0"})
        assert bad.status_code == 422 and "low_balance_thresholds" in bad.text
        assert admin.post(url, data={**form, "low:credits": "ten"}).status_code == 422
        done = admin.post(url, data={**form, "low:credits": "30"})
        assert done.status_code == 303
        assert 'id="low-balance">credits below 30<' in admin.get(done.headers["location"]).text
        got = http.get(f"/v1/accounts/{funded}", headers=bearer(read_key)).json()
        assert got["low_balance_thresholds"] == {"credits": 30}
        assert admin.post(url, data={**form, "low:credits": ""}).status_code == 303
    got = http.get(f"/v1/accounts/{funded}", headers=bearer(read_key)).json()
    assert got["low_balance_thresholds"] == {}
