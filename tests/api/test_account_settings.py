"""PATCH /v1/accounts/{id} and GET /v1/accounts/{id} over real HTTP, Redis and SQL: a
suspended account's charges and holds are 403 in the scripts, the overdraft limit reaches
the wallets Redis has, and both outlive Redis losing the account's data."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select

from meter.bounds import OVERDRAFT_LIMIT_MAX
from meter.keys import Keys
from sync.models import T_AUDIT
from tests.api.conftest import account, bearer, charge, grant, idem, wait_until, wallet
from tests.api.server import creditmeter_bin
from tests.api.test_admin_dashboard import csrf_of, login

PROBLEM = "application/problem+json"
IN_FLIGHT_WAIT_S = 30.0  # a few dozen charges over loopback on a busy machine


def hold(http: httpx.Client, key: str, acct: str, tool: str) -> httpx.Response:
    return http.post(
        "/v1/holds", json={"account_id": acct, "tool": tool}, headers={**bearer(key), **idem()}
    )


def patch(http: httpx.Client, key: str, acct: str, **fields: Any) -> httpx.Response:
    return http.patch(f"/v1/accounts/{acct}", json=fields, headers=bearer(key))


def balance(http: httpx.Client, key: str, acct: str) -> dict[str, Any]:
    r = http.get(f"/v1/accounts/{acct}/balance", headers=bearer(key))
    assert r.status_code == 200, r.text
    return wallet(r.json())


def journal_length(r: redis.Redis, keys: Keys, acct: str) -> int:
    return int(r.xlen(keys.journal(keys.bucket(acct))))


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    if slug:
        assert body["type"].endswith(":" + slug), body
    return body


@pytest.fixture(scope="module")
def keys(api_prefix: str) -> Keys:
    return Keys(prefix=api_prefix)


def suspended_count(http: httpx.Client, tool: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for s in family.samples
        if s.name == "creditmeter_charges_total"
        and s.labels.get("tool") == tool
        and s.labels.get("outcome") == "account_suspended"
    )


def test_suspended_account_charge_and_hold_are_403_and_nothing_is_journaled(
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    read_key: str,
    funded: Callable[[int], str],
    tool: str,
    redis_sync: redis.Redis,
    keys: Keys,
) -> None:
    acct = funded(100)
    assert charge(http, meter_key, acct, tool).status_code == 201
    r = patch(http, admin_key, acct, status="suspended")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "suspended"
    before, journaled = balance(http, read_key, acct), journal_length(redis_sync, keys, acct)
    refused_before = suspended_count(http, tool)
    body = assert_problem(charge(http, meter_key, acct, tool), 403, "account-suspended")
    assert body["account_id"] == acct
    assert suspended_count(http, tool) == refused_before + 1  # counted apart in /metrics
    assert_problem(hold(http, meter_key, acct, tool), 403, "account-suspended")
    assert balance(http, read_key, acct) == before
    assert journal_length(redis_sync, keys, acct) == journaled
    # Money owed to the account still moves: grants and adjustments (documented choice).
    assert grant(http, admin_key, acct, 5).status_code == 201
    adj = http.post(
        f"/v1/accounts/{acct}/adjustments",
        json={"credit_type": "credits", "amount": -5, "reason": "while suspended"},
        headers={**bearer(admin_key), **idem()},
    )
    assert adj.status_code == 201, adj.text
    assert patch(http, admin_key, acct, status="active").status_code == 200
    ok = charge(http, meter_key, acct, tool)
    assert ok.status_code == 201 and ok.json()["balance"] == 80


def test_a_charge_made_before_suspension_can_still_be_refunded(
    http: httpx.Client, admin_key: str, meter_key: str, funded: Callable[[int], str], tool: str
) -> None:
    acct = funded(50)
    made = charge(http, meter_key, acct, tool)
    assert made.status_code == 201
    assert patch(http, admin_key, acct, status="suspended").status_code == 200
    refund = http.post(
        "/v1/refunds",
        json={"charge_id": made.json()["id"], "amount": 10, "reason": "suspended, refunded"},
        headers={**bearer(meter_key), **idem()},
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["balance"] == 50


def test_overdraft_raised_lets_a_charge_go_negative_up_to_the_limit_lowered_refuses(
    http: httpx.Client, admin_key: str, meter_key: str, funded: Callable[[int], str], tool: str
) -> None:
    acct = funded(10)
    assert charge(http, meter_key, acct, tool).status_code == 201
    assert_problem(charge(http, meter_key, acct, tool), 402, "insufficient-credits")
    r = patch(http, admin_key, acct, overdraft_limit=20)
    assert r.status_code == 200 and r.json()["overdraft_limit"] == 20
    assert charge(http, meter_key, acct, tool).json()["balance"] == -10
    assert charge(http, meter_key, acct, tool).json()["balance"] == -20
    assert_problem(charge(http, meter_key, acct, tool), 402, "insufficient-credits")
    assert patch(http, admin_key, acct, overdraft_limit=30).status_code == 200
    assert patch(http, admin_key, acct, overdraft_limit=0).status_code == 200
    assert_problem(charge(http, meter_key, acct, tool), 402, "insufficient-credits")


def test_a_negative_adjustment_stays_within_the_overdraft_limit(
    http: httpx.Client, admin_key: str, funded: Callable[[int], str]
) -> None:
    acct = funded(10)
    assert patch(http, admin_key, acct, overdraft_limit=5).status_code == 200

    def adjust(amount: int) -> httpx.Response:
        return http.post(
            f"/v1/accounts/{acct}/adjustments",
            json={"credit_type": "credits", "amount": amount, "reason": "test"},
            headers={**bearer(admin_key), **idem()},
        )

    assert_problem(adjust(-16), 402, "insufficient-credits")
    assert adjust(-15).json()["balance"] == -5


def test_a_wallet_loaded_after_the_suspension_is_refused_too(
    http: httpx.Client, admin_key: str, meter_key: str, funded: Callable[[int], str], tool: str
) -> None:
    """A credit type the account had no wallet of when suspended is refused too."""
    acct = funded(10)
    assert patch(http, admin_key, acct, status="suspended").status_code == 200
    gems = f"GEM_{uuid.uuid4().hex[:6].upper()}"
    put = http.put(
        f"/v1/tools/{gems}",
        json={"display_name": "Gem", "cost": 1, "credit_type": "gems", "active": True},
        headers=bearer(admin_key),
    )
    assert put.status_code == 200, put.text
    assert_problem(charge(http, meter_key, acct, gems), 403, "account-suspended")


def test_the_account_stays_suspended_after_redis_loses_its_data(
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    read_key: str,
    funded: Callable[[int], str],
    tool: str,
    redis_sync: redis.Redis,
    api_prefix: str,
    api_env: dict[str, str],
) -> None:
    acct = funded(100)
    assert patch(http, admin_key, acct, status="suspended", overdraft_limit=7).status_code == 200
    subprocess.run(
        [creditmeter_bin(), "worker", "--burst"], env=api_env, check=True, capture_output=True
    )
    lost = list(redis_sync.scan_iter(match=f"{api_prefix}:*{acct}*"))
    assert lost and redis_sync.delete(*lost) == len(lost)
    assert_problem(charge(http, meter_key, acct, tool), 403, "account-suspended")
    assert balance(http, read_key, acct)["balance"] == 100  # hydrated from SQL
    assert patch(http, admin_key, acct, status="active").status_code == 200
    assert charge(http, meter_key, acct, tool).json()["balance"] == 90


def test_charges_in_flight_while_suspending_never_overspend(
    http: httpx.Client,
    api_url: str,
    admin_key: str,
    meter_key: str,
    read_key: str,
    funded: Callable[[int], str],
    tool: str,
) -> None:
    acct = funded(300)
    answered: list[tuple[int, bool]] = []  # (status, started after the PATCH answered)
    suspended = threading.Event()
    stop = threading.Event()

    def charger() -> None:
        with httpx.Client(base_url=api_url, timeout=10.0) as c:
            while not stop.is_set():
                after = suspended.is_set()
                answered.append((charge(c, meter_key, acct, tool).status_code, after))

    threads = [threading.Thread(target=charger) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sum(1 for s, _ in answered if s == 201) >= 5, IN_FLIGHT_WAIT_S)
        assert patch(http, admin_key, acct, status="suspended").status_code == 200
        suspended.set()
        wait_until(lambda: sum(1 for _, after in answered if after) >= 8, IN_FLIGHT_WAIT_S)
    finally:
        stop.set()
        for t in threads:
            t.join()
    made = sum(1 for s, _ in answered if s == 201)
    assert {s for s, after in answered if after} == {403}
    assert {s for s, _ in answered} <= {201, 402, 403}
    assert balance(http, read_key, acct)["balance"] == 300 - 10 * made >= 0


def test_get_shows_the_settings_and_patch_writes_one_audit_row(
    http: httpx.Client,
    admin_key: str,
    read_key: str,
    funded: Callable[[int], str],
    api_engine: Engine,
) -> None:
    acct = funded(1)
    r = patch(
        http,
        admin_key,
        acct,
        email="ada@example.com",
        metadata={"plan": "team", "seats": 3},
        overdraft_limit=50,
    )
    assert r.status_code == 200, r.text
    got = http.get(f"/v1/accounts/{acct}", headers=bearer(read_key))
    assert got.status_code == 200
    assert got.json() == {**r.json(), "id": acct}
    assert {k: v for k, v in got.json().items() if k not in ("id", "created_at")} == {
        "status": "active",
        "overdraft_limit": 50,
        "email": "ada@example.com",
        "metadata": {"plan": "team", "seats": 3},
        "rate_limits": {},
        "low_balance_thresholds": {},
    }
    assert patch(http, admin_key, acct).json() == r.json()  # {}: nothing changed, no audit
    cleared = patch(http, admin_key, acct, email=None)
    assert cleared.json()["email"] is None and cleared.json()["overdraft_limit"] == 50
    with api_engine.connect() as conn:
        rows = (
            conn.execute(
                select(T_AUDIT)
                .where(T_AUDIT.c.target == acct, T_AUDIT.c.action == "account.patch")
                .order_by(T_AUDIT.c.id)
            )
            .mappings()
            .all()
        )
    assert [json.loads(r["detail"]) for r in rows] == [
        {
            "email": "ada@example.com",
            "metadata": {"plan": "team", "seats": 3},
            "overdraft_limit": 50,
        },
        {"email": None},
    ]
    assert all(r["actor"] and admin_key not in r["actor"] for r in rows)


def test_unknown_account_is_404_and_is_not_created(
    http: httpx.Client, admin_key: str, read_key: str
) -> None:
    acct = account("never")
    assert_problem(patch(http, admin_key, acct, status="suspended"), 404, "account-not-found")
    assert_problem(http.get(f"/v1/accounts/{acct}", headers=bearer(read_key)), 404)
    assert_problem(patch(http, admin_key, acct, status="suspended"), 404, "account-not-found")


def test_patch_needs_an_admin_key(
    http: httpx.Client, meter_key: str, read_key: str, funded: Callable[[int], str]
) -> None:
    acct = funded(1)
    assert_problem(http.patch(f"/v1/accounts/{acct}", json={"status": "suspended"}), 401)
    assert_problem(patch(http, meter_key, acct, status="suspended"), 403)
    assert_problem(patch(http, read_key, acct, status="suspended"), 403)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"overdraft_limit": -1}, "overdraft_limit"),
        ({"overdraft_limit": OVERDRAFT_LIMIT_MAX + 1}, "overdraft_limit"),
        ({"overdraft_limit": 1.5}, "overdraft_limit"),
        ({"overdraft_limit": None}, "overdraft_limit"),
        ({"status": "closed"}, "status"),
        ({"status": None}, "status"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@" + "b" * 250 + ".io"}, "email"),
        ({"metadata": ["a"]}, "metadata"),
        ({"metadata": {"k": "v" * 5000}}, "metadata"),
        ({"nickname": "x"}, "nickname"),
    ],
)
def test_bad_fields_are_422_problems_naming_the_field(
    http: httpx.Client, admin_key: str, funded: Callable[[int], str], fields: dict, field: str
) -> None:
    acct = funded(1)
    body = assert_problem(patch(http, admin_key, acct, **fields), 422)
    assert any(e["field"].endswith(field) for e in body["errors"]), body


def test_the_dashboard_sets_and_removes_the_accounts_own_rate_limits(
    api_url: str, admin_key: str, http: httpx.Client, tool: str, funded: Callable[[int], str]
) -> None:
    acct = funded(100)
    with httpx.Client(base_url=api_url, timeout=10) as admin:
        assert login(admin, admin_key).status_code == 303
        page = admin.get(f"/admin/accounts/{acct}")
        url, token = f"/admin/accounts/{acct}/settings", csrf_of(page.text)
        form = {"csrf_token": token, "status": "active", "overdraft_limit": "0"}
        bad = admin.post(url, data={**form, "rate_limits": f"{tool}=5/day"})
        assert bad.status_code == 422 and "rate_limits" in bad.text
        assert admin.post(url, data={**form, "rate_limits": tool}).status_code == 422
        done = admin.post(url, data={**form, "rate_limits": f"{tool}=1/hour, *=5/second"})
        assert done.status_code == 303
        shown = admin.get(done.headers["location"]).text
        assert f'value="*=5/second, {tool}=1/hour"' in shown
        assert charge(http, admin_key, acct, tool).status_code == 201
        refused = charge(http, admin_key, acct, tool)
        assert refused.status_code == 429 and refused.json()["limit"] == 1
        # Leaving a tool out gives it the catalog's limit back (none here): only * stays.
        assert admin.post(url, data={**form, "rate_limits": "*=5/second"}).status_code == 303
    got = http.get(f"/v1/accounts/{acct}", headers=bearer(admin_key)).json()
    assert got["rate_limits"] == {"*": "5/second"}
