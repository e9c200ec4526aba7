"""A tool's rate limit over real HTTP (a running `creditmeter api` on real Redis and SQL):
the catalog file sets it, the charge over it is 429 problem+json with Retry-After and the
IETF draft RateLimit-* headers, costs nothing, and is counted in /metrics; a charge it
counts carries the same headers. An account's own limit (PATCH /v1/accounts/{id}
rate_limits) beats the catalog's, and outlives Redis losing the account's data."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from meter import Meter
from meter.bounds import RATE_LIMIT_OVERRIDES_MAX
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.catalog_file import apply_catalog, parse_catalog
from sync.loader import SqlLoader
from tests.api.conftest import account, bearer, wallet
from tests.api.server import creditmeter_bin

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


def _patch(http: httpx.Client, key: str, acct: str, limits: Any) -> httpx.Response:
    return http.patch(f"/v1/accounts/{acct}", json={"rate_limits": limits}, headers=bearer(key))


def _headers(r: httpx.Response) -> tuple[int, int, int]:
    h = r.headers
    return int(h["RateLimit-Limit"]), int(h["RateLimit-Remaining"]), int(h["RateLimit-Reset"])


def test_a_counted_charge_sends_the_ratelimit_headers_a_replay_and_a_free_tool_none(
    http: httpx.Client, meter_key: str, admin_key: str, tool: str, funded: Callable[[], str]
) -> None:
    acct = funded()
    dry = http.post(
        "/v1/charges",
        json={"account_id": acct, "tool": tool, "dry_run": True},
        headers=bearer(meter_key),
    )
    assert dry.status_code == 200 and _headers(dry) == (2, 2, 0)
    key = {**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/v1/charges", json={"account_id": acct, "tool": tool}, headers=key)
    assert first.status_code == 201, first.text
    limit, remaining, reset_s = _headers(first)
    assert (limit, remaining) == (2, 1) and 1790 <= reset_s <= 1800  # one call per 30 min
    second = _charged(http, meter_key, acct, tool)
    limit, remaining, reset_s = _headers(second)
    assert (limit, remaining) == (2, 0) and 3590 <= reset_s <= 3600
    replay = http.post("/v1/charges", json={"account_id": acct, "tool": tool}, headers=key)
    assert replay.status_code == 201 and "RateLimit-Limit" not in replay.headers
    free = f"FREE_{uuid.uuid4().hex[:6].upper()}"
    put = {"display_name": "F", "cost": 1, "credit_type": "credits"}
    assert http.put(f"/v1/tools/{free}", json=put, headers=bearer(admin_key)).status_code == 200
    assert "RateLimit-Limit" not in _charged(http, meter_key, acct, free).headers


def test_the_accounts_own_limit_beats_the_catalogs_and_null_gives_it_back(
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    read_key: str,
    tool: str,
    funded: Callable[[], str],
) -> None:
    acct = funded()
    r = _patch(http, admin_key, acct, {tool: "4/hour"})
    assert r.status_code == 200 and r.json()["rate_limits"] == {tool: "4/hour"}, r.text
    got = http.get(f"/v1/accounts/{acct}", headers=bearer(read_key))
    assert got.json()["rate_limits"] == {tool: "4/hour"}
    assert [_headers(_charged(http, meter_key, acct, tool))[1] for _ in range(4)] == [3, 2, 1, 0]
    refused = _charged(http, meter_key, acct, tool)
    assert refused.status_code == 429 and refused.json()["limit"] == 4
    other = funded()  # the catalog's 2 an hour still holds for every other account
    assert [_charged(http, meter_key, other, tool).status_code for _ in range(3)] == [
        201,
        201,
        429,
    ]
    back = _patch(http, admin_key, acct, {tool: None})
    assert back.status_code == 200 and back.json()["rate_limits"] == {}
    again = _charged(http, meter_key, acct, tool)
    assert again.status_code == 429 and again.json()["limit"] == 2


def test_zero_for_every_tool_blocks_the_account_and_metrics_count_it(
    http: httpx.Client, admin_key: str, meter_key: str, tool: str, funded: Callable[[], str]
) -> None:
    acct = funded()
    before = _rate_limited_count(http, tool)
    assert _patch(http, admin_key, acct, {"*": "0/minute"}).status_code == 200
    r = _charged(http, meter_key, acct, tool)
    assert r.status_code == 429 and r.json()["limit"] == 0, r.text
    assert r.headers["Retry-After"] == "60" and r.headers["RateLimit-Limit"] == "0"
    assert "blocked for this account" in r.json()["detail"]
    assert _rate_limited_count(http, tool) == before + 1


def test_the_accounts_own_limit_outlives_redis_losing_its_data(
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    tool: str,
    funded: Callable[[], str],
    redis_url: str,
    api_prefix: str,
    api_env: dict[str, str],
) -> None:
    acct = funded()
    assert _patch(http, admin_key, acct, {tool: "1/hour"}).status_code == 200
    subprocess.run(
        [creditmeter_bin(), "worker", "--burst"], env=api_env, check=True, capture_output=True
    )
    r = sync_client(redis_url)
    lost = list(r.scan_iter(match=f"{api_prefix}:*{acct}*"))
    assert lost and r.delete(*lost) == len(lost)
    first = _charged(http, meter_key, acct, tool)  # hydrated from SQL, the override with it
    assert first.status_code == 201 and _headers(first)[0] == 1, first.text
    assert _charged(http, meter_key, acct, tool).json()["limit"] == 1


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"lower_case": "1/hour"}, "rate_limits.lower_case"),
        ({"T": "5/day"}, "rate_limits.T"),
        ({"T": "-1/minute"}, "rate_limits.T"),
        ({"T": "1000001/second"}, "rate_limits.T"),
        ({"T": 5}, "rate_limits.T"),
        ({f"T{i}": "1/second" for i in range(RATE_LIMIT_OVERRIDES_MAX + 1)}, "rate_limits"),
        (None, "rate_limits"),
        ("60/minute", "rate_limits"),
    ],
)
def test_bad_rate_limits_are_422_problems_naming_the_field(
    http: httpx.Client, admin_key: str, funded: Callable[[], str], limits: Any, field: str
) -> None:
    r = _patch(http, admin_key, funded(), limits)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert any(e["field"].removeprefix("body.").startswith(field) for e in r.json()["errors"])


def test_more_own_limits_than_allowed_once_merged_is_a_422(
    http: httpx.Client, admin_key: str, funded: Callable[[], str]
) -> None:
    acct = funded()
    full = {f"T{i}": "1/second" for i in range(RATE_LIMIT_OVERRIDES_MAX)}
    assert _patch(http, admin_key, acct, full).status_code == 200
    r = _patch(http, admin_key, acct, {"ONE_MORE": "1/second"})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert _patch(http, admin_key, acct, {"T0": None, "ONE_MORE": "1/second"}).status_code == 200
