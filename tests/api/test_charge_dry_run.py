"""POST /v1/charges with "dry_run": true over real HTTP (a running `creditmeter api` on real
Redis and SQL): 200 with whether the charge would succeed, its price and the balance; the
same errors as a charge for an unknown or disabled tool; nothing written, no key needed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, select

from sync.models import T_ACCOUNTS
from tests.api.conftest import account, bearer, wallet
from tests.meter.helpers import snapshot

PROBLEM = "application/problem+json"


def idem() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def tools(api_url: str, admin_key: str, api_prefix: str) -> tuple[str, str]:
    """(an active tool costing 10, a switched-off one)."""
    names = (f"DRY_{api_prefix.upper()}", f"DRYOFF_{api_prefix.upper()}")
    for name, active in zip(names, (True, False), strict=True):
        r = httpx.put(
            f"{api_url}/v1/tools/{name}",
            json={"display_name": name, "cost": 10, "credit_type": "credits", "active": active},
            headers=bearer(admin_key),
        )
        assert r.status_code == 200, r.text
    return names


@pytest.fixture
def funded(http: httpx.Client, admin_key: str) -> Callable[[int], str]:
    def make(amount: int) -> str:
        acct = account("dry")
        r = http.post(
            f"/v1/accounts/{acct}/grants",
            json={"credit_type": "credits", "amount": amount, "category": "paid"},
            headers={**bearer(admin_key), **idem()},
        )
        assert r.status_code == 201, r.text
        return acct

    return make


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def dry(http: httpx.Client, key: str, acct: str, tool: str, **extra: Any) -> httpx.Response:
    headers = {**bearer(key), **extra.pop("headers", {})}
    body = {"account_id": acct, "tool": tool, "dry_run": True, **extra}
    return http.post("/v1/charges", json=body, headers=headers)


def test_dry_run_that_would_succeed_answers_200_and_writes_nothing(
    http: httpx.Client,
    meter_key: str,
    read_key: str,
    tools: tuple[str, str],
    funded: Callable[[int], str],
    r: redis.Redis,
    api_prefix: str,
) -> None:
    acct = funded(50)
    before = snapshot(r, api_prefix)
    # An Idempotency-Key is not needed; one sent is neither checked nor stored.
    res = dry(http, meter_key, acct, tools[0], quantity=2, headers=idem())
    assert res.status_code == 200, res.text
    assert res.json() == {
        "would_succeed": True,
        "account_id": acct,
        "tool": tools[0],
        "credit_type": "credits",
        "amount": 20,
        "balance": 50,
        "available": 50,
        "reason": None,
    }
    assert snapshot(r, api_prefix) == before
    bal = http.get(f"/v1/accounts/{acct}/balance", headers=bearer(read_key))
    assert wallet(bal.json())["balance"] == 50


def test_dry_run_that_would_fail_answers_200_with_the_reason(
    http: httpx.Client,
    meter_key: str,
    tools: tuple[str, str],
    funded: Callable[[int], str],
    r: redis.Redis,
    api_prefix: str,
) -> None:
    acct = funded(15)
    before = snapshot(r, api_prefix)
    res = dry(http, meter_key, acct, tools[0], quantity=2)
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["would_succeed"], body["reason"]) == (False, "insufficient-credits")
    assert (body["amount"], body["balance"], body["available"]) == (20, 15, 15)
    assert snapshot(r, api_prefix) == before
    # the real charge is refused the same way
    real = http.post(
        "/v1/charges",
        json={"account_id": acct, "tool": tools[0], "quantity": 2},
        headers={**bearer(meter_key), **idem()},
    )
    assert real.status_code == 402


@pytest.mark.parametrize(
    ("which", "status", "slug"), [(1, 403, "tool-disabled"), (None, 404, "unknown-tool")]
)
def test_dry_run_of_a_tool_a_charge_refuses_gets_the_charges_problem(
    http: httpx.Client,
    meter_key: str,
    tools: tuple[str, str],
    funded: Callable[[int], str],
    which: int | None,
    status: int,
    slug: str,
) -> None:
    acct = funded(50)
    tool = "NO_SUCH_TOOL" if which is None else tools[which]
    res = dry(http, meter_key, acct, tool)
    real = http.post(
        "/v1/charges",
        json={"account_id": acct, "tool": tool},
        headers={**bearer(meter_key), **idem()},
    )
    for answer in (res, real):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith(PROBLEM)
        assert answer.json()["type"].endswith(slug)


def test_a_real_charge_still_needs_an_idempotency_key(
    http: httpx.Client, meter_key: str, tools: tuple[str, str], funded: Callable[[int], str]
) -> None:
    acct = funded(50)
    res = http.post(
        "/v1/charges", json={"account_id": acct, "tool": tools[0]}, headers=bearer(meter_key)
    )
    assert res.status_code == 400, res.text


def test_dry_run_is_strictly_a_boolean(
    http: httpx.Client, meter_key: str, tools: tuple[str, str], funded: Callable[[int], str]
) -> None:
    acct = funded(50)
    res = http.post(
        "/v1/charges",
        json={"account_id": acct, "tool": tools[0], "dry_run": "yes"},
        headers={**bearer(meter_key), **idem()},
    )
    assert res.status_code == 422, res.text


def test_a_burst_of_dry_runs_with_real_charges_never_changes_the_balance(
    api_url: str,
    http: httpx.Client,
    meter_key: str,
    read_key: str,
    tools: tuple[str, str],
    funded: Callable[[int], str],
) -> None:
    acct = funded(100)  # ten charges of 10

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as c:
            calls = []
            for i in range(60):
                body: dict[str, Any] = {"account_id": acct, "tool": tools[0]}
                headers = bearer(meter_key)
                if i % 3:
                    body["dry_run"] = True
                else:
                    headers = {**headers, **idem()}
                calls.append(c.post("/v1/charges", json=body, headers=headers))
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    charges = answers[0::3]
    checks = [a for i, a in enumerate(answers) if i % 3]
    assert sorted(a.status_code for a in charges) == [201] * 10 + [402] * 10
    assert {a.status_code for a in checks} == {200}
    bal = http.get(f"/v1/accounts/{acct}/balance", headers=bearer(read_key))
    assert wallet(bal.json())["balance"] == 0


def test_dry_run_on_an_account_never_seen_creates_nothing(
    http: httpx.Client, meter_key: str, tools: tuple[str, str], api_engine: Engine
) -> None:
    acct = account("drynew")
    res = dry(http, meter_key, acct, tools[0])
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["would_succeed"], body["balance"], body["reason"]) == (
        False,
        0,
        "insufficient-credits",
    )
    with api_engine.connect() as conn:
        assert conn.execute(select(T_ACCOUNTS).where(T_ACCOUNTS.c.id == acct)).first() is None
