"""A tool's rate limit over real HTTP (a running `creditmeter api` on real Redis and SQL):
the catalog file sets it, the charge over it is 429 problem+json with Retry-After and the
IETF draft RateLimit-* headers, costs nothing, and is counted in /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from meter import Meter
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.catalog_file import apply_catalog, parse_catalog
from sync.loader import SqlLoader
from tests.api.conftest import account, bearer, wallet

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def tool(api_url: str, api_engine: Engine, redis_url: str, api_prefix: str) -> Iterator[str]:
    """A tool of cost 1 limited to 2 calls an hour per account, set by the catalog file."""
    name = f"RL_{api_prefix.upper()}"
    keys = Keys(prefix=api_prefix)
    meter = Meter(sync_client(redis_url), keys=keys, loader=SqlLoader(api_engine, keys))
    text = f'[[tools]]\nname = "{name}"\ncost = 1\ncredit_type = "credits"\n'
    apply_catalog(api_engine, meter, parse_catalog(text + 'rate_limit = "2/hour"\n'))
    yield name


@pytest.fixture
def funded(http: httpx.Client, admin_key: str) -> Callable[[], str]:
    def make() -> str:
        acct = account("rl")
        r = http.post(
            f"/v1/accounts/{acct}/grants",
            json={"credit_type": "credits", "amount": 10, "category": "paid"},
            headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 201, r.text
        return acct

    return make


def _charged(http: httpx.Client, key: str, acct: str, tool: str) -> httpx.Response:
    return http.post(
        "/v1/charges",
        json={"account_id": acct, "tool": tool},
        headers={**bearer(key), "Idempotency-Key": uuid.uuid4().hex},
    )


def _rate_limited_count(http: httpx.Client, tool: str) -> float:
    text = http.get("/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "creditmeter_charges_total"
        and s.labels.get("tool") == tool
        and s.labels.get("outcome") == "rate_limited"
    )


def test_the_charge_over_the_limit_is_429_with_the_headers_and_costs_nothing(
    http: httpx.Client, meter_key: str, read_key: str, tool: str, funded: Callable[[], str]
) -> None:
    acct = funded()
    before = _rate_limited_count(http, tool)
    for _ in range(2):
        assert _charged(http, meter_key, acct, tool).status_code == 201
    r = _charged(http, meter_key, acct, tool)
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"].endswith("rate-limited")
    assert (r.json()["tool"], r.json()["limit"]) == (tool, 2)
    # one call per 30 minutes; the whole limit is back an hour after the first call
    assert 1790 <= int(r.headers["Retry-After"]) <= 1800
    assert r.headers["RateLimit-Limit"] == "2"
    assert r.headers["RateLimit-Remaining"] == "0"
    assert 3590 <= int(r.headers["RateLimit-Reset"]) <= 3600
    bal = http.get(f"/v1/accounts/{acct}/balance", headers=bearer(read_key))
    assert wallet(bal.json())["balance"] == 10 - 2
    assert _rate_limited_count(http, tool) == before + 1


def test_another_account_has_its_own_limit(
    http: httpx.Client, meter_key: str, tool: str, funded: Callable[[], str]
) -> None:
    first, second = funded(), funded()
    for acct in (first, first, second, second):
        assert _charged(http, meter_key, acct, tool).status_code == 201
    assert _charged(http, meter_key, first, tool).status_code == 429


def test_a_dry_run_over_the_limit_is_the_same_429(
    http: httpx.Client, meter_key: str, tool: str, funded: Callable[[], str]
) -> None:
    acct = funded()
    for _ in range(2):
        assert _charged(http, meter_key, acct, tool).status_code == 201
    r = http.post(
        "/v1/charges",
        json={"account_id": acct, "tool": tool, "dry_run": True},
        headers=bearer(meter_key),
    )
    assert r.status_code == 429, r.text
    assert r.headers["RateLimit-Limit"] == "2"


def test_after_retry_after_the_same_request_and_key_go_through(
    http: httpx.Client,
    meter_key: str,
    api_engine: Engine,
    redis_url: str,
    api_prefix: str,
    funded: Callable[[], str],
) -> None:
    name = f"RLS_{api_prefix.upper()}"
    keys = Keys(prefix=api_prefix)
    meter = Meter(sync_client(redis_url), keys=keys, loader=SqlLoader(api_engine, keys))
    text = f'[[tools]]\nname = "{name}"\ncost = 1\ncredit_type = "credits"\n'
    apply_catalog(api_engine, meter, parse_catalog(text + 'rate_limit = "1/second"\n'))
    acct = funded()
    assert _charged(http, meter_key, acct, name).status_code == 201
    again = {**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex}
    body = {"account_id": acct, "tool": name}
    refused = http.post("/v1/charges", json=body, headers=again)
    assert refused.status_code == 429, refused.text
    time.sleep(int(refused.headers["Retry-After"]))
    assert http.post("/v1/charges", json=body, headers=again).status_code == 201


def test_the_tools_api_sets_shows_and_removes_a_limit_and_put_keeps_what_it_sends(
    http: httpx.Client, admin_key: str, meter_key: str, funded: Callable[[], str], api_prefix: str
) -> None:
    name = f"LIMITED_BY_API_{api_prefix.upper()}"
    put = {"display_name": "L", "cost": 1, "credit_type": "credits", "rate_limit": "1/hour"}
    r = http.put(f"/v1/tools/{name}", json=put, headers=bearer(admin_key))
    assert r.status_code == 200 and r.json()["rate_limit"] == "1/hour", r.text
    acct = funded()
    assert _charged(http, meter_key, acct, name).status_code == 201
    assert _charged(http, meter_key, acct, name).status_code == 429
    # A PATCH of another field keeps the limit; "" removes it.
    kept = http.patch(f"/v1/tools/{name}", json={"cost": 2}, headers=bearer(admin_key))
    assert kept.json()["rate_limit"] == "1/hour"
    assert _charged(http, meter_key, acct, name).status_code == 429
    gone = http.patch(f"/v1/tools/{name}", json={"rate_limit": ""}, headers=bearer(admin_key))
    assert gone.json()["rate_limit"] == ""
    assert _charged(http, meter_key, acct, name).status_code == 201
    bad = http.patch(f"/v1/tools/{name}", json={"rate_limit": "5/day"}, headers=bearer(admin_key))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.rate_limit"
