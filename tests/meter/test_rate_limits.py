"""Rate limits per (account, tool), GCRA inside the charge script (the account's own limits
beating the catalog's): over the limit a charge is RateLimited and costs nothing; a charge
that passes is counted, also when many race in one batch, and carries the limit's state;
the limit refills at count per period."""

from __future__ import annotations

import asyncio

import pytest
import redis

from meter import InsufficientCredits, InvalidArgument, RateLimited
from meter.models import RateLimitState, Tool
from meter.rate_limits import RateLimit, overrides_replica, parse
from tests.meter.helpers import Clock, make_async_meter, make_meter, snapshot

CT = "credits"


def _limited(m, name: str = "LIM", limit: str = "3/second") -> None:  # type: ignore[no-untyped-def]
    m.set_tools([Tool(name=name, cost=1, credit_type=CT, rate_limit=limit)])


def test_the_call_over_the_limit_is_refused_costs_nothing_and_says_when_to_retry(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    clock = Clock()
    m = make_meter(redis_url, key_prefix, clock=clock)
    _limited(m)
    m.grant("a", CT, 100)
    for _ in range(3):
        m.charge("a", "LIM")
    before = snapshot(redis_sync, key_prefix)
    with pytest.raises(RateLimited) as refused:
        m.charge("a", "LIM")
    assert snapshot(redis_sync, key_prefix) == before
    err = refused.value
    assert (err.tool, err.limit, err.retry_after_ms, err.reset_ms) == ("LIM", 3, 334, 1000)
    clock.advance(333)
    with pytest.raises(RateLimited):
        m.charge("a", "LIM")
    clock.advance(1)
    assert m.charge("a", "LIM").balance == 96  # one call back per interval (1000 / 3 ms)
    clock.advance(1000)
    for _ in range(3):  # after a quiet period, the whole limit at once
        m.charge("a", "LIM")
    assert m.balance("a", [CT]).wallet(CT).balance == 93  # type: ignore[union-attr]


def test_the_limit_is_per_account_and_per_tool(redis_url: str, key_prefix: str) -> None:
    m = make_meter(redis_url, key_prefix, clock=Clock())
    m.set_tools(
        [
            Tool(name="LIM", cost=1, credit_type=CT, rate_limit="1/minute"),
            Tool(name="LIM2", cost=1, credit_type=CT, rate_limit="1/minute"),
            Tool(name="FREE", cost=1, credit_type=CT),
        ]
    )
    for acct in ("a", "b"):
        m.grant(acct, CT, 100)
        m.charge(acct, "LIM")
        m.charge(acct, "LIM2")
        with pytest.raises(RateLimited):
            m.charge(acct, "LIM")
    for _ in range(20):
        m.charge("a", "FREE")


def test_a_charge_refused_for_credits_is_not_counted(redis_url: str, key_prefix: str) -> None:
    m = make_meter(redis_url, key_prefix, clock=Clock())
    _limited(m, limit="2/hour")
    m.grant("a", CT, 2)
    for _ in range(5):
        with pytest.raises(InsufficientCredits):
            m.charge("a", "LIM", 3)
    m.charge("a", "LIM")
    m.charge("a", "LIM")
    with pytest.raises(RateLimited):
        m.charge("a", "LIM")


def test_a_replay_is_not_counted_again(redis_url: str, key_prefix: str) -> None:
    m = make_meter(redis_url, key_prefix, clock=Clock())
    _limited(m, limit="1/hour")
    m.grant("a", CT, 10)
    first = m.charge("a", "LIM", idempotency_key="k1")
    assert m.charge("a", "LIM", idempotency_key="k1").id == first.id


def test_a_dry_run_is_refused_when_the_charge_would_be_and_never_counts(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix, clock=Clock())
    _limited(m, limit="2/minute")
    m.grant("a", CT, 10)
    for _ in range(10):
        assert m.charge("a", "LIM", dry_run=True).would_succeed
    m.charge("a", "LIM")
    m.charge("a", "LIM")
    with pytest.raises(RateLimited):
        m.charge("a", "LIM", dry_run=True)


async def test_a_burst_in_one_batch_charges_exactly_the_limit(
    redis_url: str, key_prefix: str
) -> None:
    m = make_async_meter(redis_url, key_prefix, clock=Clock())
    try:
        await m.set_tools([Tool(name="LIM", cost=1, credit_type=CT, rate_limit="10/minute")])
        await m.grant("a", CT, 1000)
        results = await asyncio.gather(
            *(m.charge("a", "LIM") for _ in range(200)), return_exceptions=True
        )
        wallet = (await m.balance("a", [CT])).wallet(CT)
    finally:
        await m.aclose()
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, RateLimited) for r in refused), refused[:3]
    assert len(refused) == 190
    assert wallet is not None and wallet.balance == 990


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("1/second", RateLimit(1, 1000)),
        ("60/minute", RateLimit(60, 60_000)),
        ("1000000/hour", RateLimit(1_000_000, 3_600_000)),
    ],
)
def test_a_rate_limit_reads_count_and_period(text: str, limit: RateLimit) -> None:
    assert parse(text) == limit
    assert limit.text == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "60",
        "60/min",
        "60/minutes",
        "0/minute",
        "-1/minute",
        "1.5/second",
        "60 / minute",
        "1000001/hour",
        "01/second",
        "60/Minute",
    ],
)
def test_a_malformed_rate_limit_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse(text)


def test_a_balance_read_knows_the_credit_type_of_a_limited_tool(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tools([Tool(name="LIMV", cost=1, credit_type="video", rate_limit="5/second")])
    m.grant("a", "video", 7)
    assert m.balance("a").wallet("video").balance == 7  # type: ignore[union-attr]


def test_a_charge_carries_the_limit_in_force_and_a_replay_none(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix, clock=Clock())
    _limited(m, limit="2/minute")
    m.set_tools([Tool(name="FREE", cost=1, credit_type=CT)])
    m.grant("a", CT, 10)
    first = m.charge("a", "LIM", idempotency_key="k1")
    assert first.rate_limit == RateLimitState(limit=2, remaining=1, reset_ms=30_000)
    assert m.charge("a", "LIM", idempotency_key="k1").rate_limit is None  # counted nothing
    assert m.charge("a", "LIM", dry_run=True).rate_limit == RateLimitState(2, 1, 30_000)
    assert m.charge("a", "FREE").rate_limit is None


def test_the_accounts_own_limits_beat_the_catalogs_and_null_gives_it_back(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix, clock=Clock())
    _limited(m, limit="1/minute")
    m.set_tools([Tool(name="FREE", cost=1, credit_type=CT)])
    m.grant("a", CT, 100)
    m.set_account(
        "a", overdraft_limit=0, suspended=False, rate_limits={"LIM": "3/minute", "*": "0/hour"}
    )
    left = [m.charge("a", "LIM").rate_limit for _ in range(3)]
    assert [r.remaining for r in left if r] == [2, 1, 0]
    with pytest.raises(RateLimited) as blocked:
        m.charge("a", "FREE")
    assert (blocked.value.limit, blocked.value.retry_after_ms) == (0, 3_600_000)
    assert "blocked for this account" in str(blocked.value)
    m.set_account("a", overdraft_limit=0, suspended=False, rate_limits={})
    m.charge("a", "FREE")
    with pytest.raises(RateLimited) as catalog:
        m.charge("a", "LIM")  # the catalog's 1 a minute again, already used up
    assert catalog.value.limit == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"lim": "1/second"},
        {"LIM": "1/day"},
        {"LIM": "-1/second"},
        {"**": "1/second"},
        {f"T{i}": "1/second" for i in range(33)},
    ],
)
def test_malformed_account_rate_limits_are_refused(overrides: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        overrides_replica(overrides)


def test_account_rate_limits_replica_is_sorted_with_counts_and_periods() -> None:
    replica = overrides_replica({"LIM": "600/minute", "*": "0/second"})
    assert replica == "*:0:1000;LIM:600:60000"


def test_the_limits_state_is_a_wallet_field_that_a_later_charge_drops_once_stale(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    clock = Clock()
    m = make_meter(redis_url, key_prefix, clock=clock)
    _limited(m, limit="1/second")
    m.set_tools([Tool(name="FREE", cost=1, credit_type=CT)])
    m.grant("a", CT, 10)
    wallet = m.keys.wallet("a", CT)
    m.charge("a", "LIM")
    tat = redis_sync.hget(wallet, "rt:LIM")
    assert tat is not None and float(tat) == clock.now_ms + 1000
    before = snapshot(redis_sync, key_prefix)
    clock.advance(1000)
    m.charge("a", "LIM", dry_run=True)  # a dry run writes nothing, not even the drop
    assert snapshot(redis_sync, key_prefix) == before
    m.charge("a", "FREE")  # the limit is whole again: the field goes with this save
    assert redis_sync.hget(wallet, "rt:LIM") is None
    m.charge("a", "LIM")
    with pytest.raises(RateLimited):  # the state is back, counted as before
        m.charge("a", "LIM")
