"""Every invalid argument raises InvalidArgument before any Redis call: the meter here talks
to a closed port, so a call that reached Redis would raise ConnectionError instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from meter import InvalidArgument, Keys, Meter, NewAccountLoader, Tool, ids

A, C = "acct", "credits"
HOLD = ids.new_id(3)
OWNER = (A, C)
BAD_INTS: list[Any] = ["10", 10.0, True, 1e3, 2**53, -1, None]
BAD_ACCOUNTS: list[Any] = ["", "a" * 129, "a b", "ä", "a/b", 5, None]
BAD_CREDIT_TYPES: list[Any] = ["", "Credits", "a" * 33, "cr-edits", 1]
BAD_TOOLS: list[Any] = ["gpt", "", "G" * 65, "GPT-4", None]
BAD_IDEM_KEYS: list[Any] = ["", "k" * 256, "a b", "k\x00", "k\x7f", "clé", 7]
BAD_METADATA: list[Any] = [
    [1],
    "{}",
    {"a": "x" * 4096},
    {"x": float("nan")},
    {"x": float("inf")},
    {"x": object()},
]

Case = Callable[[Meter], object]


@pytest.fixture(scope="module")
def meter() -> Meter:
    client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    return Meter(client, keys=Keys(prefix="tvalidate"), loader=NewAccountLoader())


def _cases() -> list[Any]:
    cases: list[tuple[str, Case]] = []

    def add(name: str, values: list[Any], fn: Callable[[Meter, Any], object]) -> None:
        for v in values:
            cases.append((f"{name}={v!r:.20}", lambda m, v=v: fn(m, v)))

    add("charge.quantity", [*BAD_INTS, 0, 10**9 + 1], lambda m, v: m.charge("acct", "GPT", v))
    add("charge.account", BAD_ACCOUNTS, lambda m, v: m.charge(v, "GPT"))
    add("charge.tool", BAD_TOOLS, lambda m, v: m.charge("acct", v))
    add("charge.idem", BAD_IDEM_KEYS, lambda m, v: m.charge("acct", "GPT", idempotency_key=v))
    add("charge.metadata", BAD_METADATA, lambda m, v: m.charge("acct", "GPT", metadata=v))
    add("charge.description", ["d" * 1025, 5], lambda m, v: m.charge("acct", "GPT", description=v))
    add("hold.ttl", [*BAD_INTS, 0, 86_401], lambda m, v: m.hold("acct", "GPT", ttl_s=v))
    add(
        "hold.amount",
        ["10", 10.0, True, 1e3, 2**53, -1],
        lambda m, v: m.hold(A, "GPT", amount=v),
    )
    add("hold.quantity", [0, 10**9 + 1, "1"], lambda m, v: m.hold("acct", "GPT", quantity=v))
    add("hold.account", BAD_ACCOUNTS, lambda m, v: m.hold(v, "GPT"))
    add("hold.tool", BAD_TOOLS, lambda m, v: m.hold("acct", v))
    add("hold.idem", BAD_IDEM_KEYS, lambda m, v: m.hold("acct", "GPT", idempotency_key=v))
    add("settle.amount", ["10", 10.0, True, 1e3, 2**53, -1], lambda m, v: m.settle(HOLD, v))
    add(
        "settle.hold_id",
        ["", "h" * 65, "a b", "ü", 5, ids.new_id(16)],
        lambda m, v: m.settle(v, 1, owner=OWNER),
    )
    add("settle.idem", BAD_IDEM_KEYS, lambda m, v: m.settle(HOLD, idempotency_key=v))
    add("settle.metadata", BAD_METADATA, lambda m, v: m.settle(HOLD, metadata=v))
    add("release.hold_id", ["", "not an id", None], lambda m, v: m.release(v))
    add("release.idem", BAD_IDEM_KEYS, lambda m, v: m.release(HOLD, idempotency_key=v))
    add("extend.ttl", [*BAD_INTS, 0, 86_401], lambda m, v: m.extend(HOLD, v))
    add("extend.hold_id", ["", "a b", None], lambda m, v: m.extend(v, 60))
    add("extend.idem", BAD_IDEM_KEYS, lambda m, v: m.extend(HOLD, 60, idempotency_key=v))
    add("refund.amount", ["10", 10.0, True, 1e3, 2**53, -1, 0], lambda m, v: m.refund(HOLD, v))
    add("refund.charge_id", ["", "a b", "x" * 65, None], lambda m, v: m.refund(v))
    add("refund.reason", ["r" * 1025, 3], lambda m, v: m.refund(HOLD, reason=v))
    add("refund.idem", BAD_IDEM_KEYS, lambda m, v: m.refund(HOLD, idempotency_key=v))
    add("refund.metadata", BAD_METADATA, lambda m, v: m.refund(HOLD, metadata=v))
    add("grant.amount", [*BAD_INTS, 0], lambda m, v: m.grant(A, C, v))
    add("grant.account", BAD_ACCOUNTS, lambda m, v: m.grant(v, "credits", 1))
    add("grant.credit_type", BAD_CREDIT_TYPES, lambda m, v: m.grant("acct", v, 1))
    add(
        "grant.category",
        ["gift", "", "Paid", None],
        lambda m, v: m.grant(A, C, 1, category=v),
    )
    add(
        "grant.priority",
        [-1, 101, "5", 5.0, True],
        lambda m, v: m.grant(A, C, 1, priority=v),
    )
    add(
        "grant.expires",
        [0, 1, -1, "2000000000000", 2e12, 2**53],
        lambda m, v: m.grant(A, C, 1, expires_at_ms=v),
    )
    add("grant.source", ["", "s" * 33, None], lambda m, v: m.grant(A, C, 1, source=v))
    add("grant.reference", ["r" * 256], lambda m, v: m.grant(A, C, 1, reference_id=v))
    add(
        "grant.grant_id",
        ["", "a b", "g" * 65],
        lambda m, v: m.grant(A, C, 1, grant_id=v),
    )
    add("grant.idem", BAD_IDEM_KEYS, lambda m, v: m.grant(A, C, 1, idempotency_key=v))
    add("grant.metadata", BAD_METADATA, lambda m, v: m.grant(A, C, 1, metadata=v))
    add(
        "adjust.amount",
        [0, "10", 10.0, True, 2**53, -(2**53)],
        lambda m, v: m.adjust(A, C, v, reason="r"),
    )
    add(
        "adjust.reason",
        ["", None, "r" * 1025],
        lambda m, v: m.adjust(A, C, 5, reason=v),
    )
    add("adjust.account", BAD_ACCOUNTS, lambda m, v: m.adjust(v, "credits", 5, reason="r"))
    add("adjust.credit_type", BAD_CREDIT_TYPES, lambda m, v: m.adjust("acct", v, 5, reason="r"))
    add(
        "adjust.category",
        ["gift"],
        lambda m, v: m.adjust(A, C, 5, reason="r", category=v),
    )
    add(
        "adjust.idem",
        BAD_IDEM_KEYS,
        lambda m, v: m.adjust(A, C, 5, reason="r", idempotency_key=v),
    )
    add("balance.account", BAD_ACCOUNTS, lambda m, v: m.balance(v, ["credits"]))
    add("balance.credit_type", BAD_CREDIT_TYPES, lambda m, v: m.balance("acct", [v]))
    add(
        "set_tools.cost",
        [-1, 2**53, "1", 1.0, True],
        lambda m, v: m.set_tools([Tool("GPT", v, "credits")]),
    )
    add("set_tools.name", BAD_TOOLS, lambda m, v: m.set_tools([Tool(v, 1, "credits")]))
    add("set_tools.credit_type", BAD_CREDIT_TYPES, lambda m, v: m.set_tools([Tool("GPT", 1, v)]))
    return [pytest.param(fn, id=name) for name, fn in cases]


@pytest.mark.parametrize("call", _cases())
def test_invalid_argument_is_refused_before_any_redis_call(meter: Meter, call: Case) -> None:
    with pytest.raises(InvalidArgument):
        call(meter)


def test_a_valid_call_does_reach_redis(meter: Meter) -> None:
    """The proof above holds only if a valid call on this meter would fail on the network."""
    with pytest.raises(redis.ConnectionError):
        meter.charge("acct", "GPT")


def test_invalid_argument_names_the_field(meter: Meter) -> None:
    with pytest.raises(InvalidArgument) as err:
        meter.charge("acct", "GPT", quantity=0)
    assert err.value.field == "quantity"
    assert isinstance(err.value, ValueError)


NEWLINE_CASES = [
    pytest.param(lambda m: m.charge("acct\n", "GPT"), id="account"),
    pytest.param(lambda m: m.grant("acct", "gems\n", 1), id="credit_type"),
    pytest.param(lambda m: m.charge("acct", "GPT\n"), id="tool"),
    pytest.param(lambda m: m.charge("acct", "GPT", idempotency_key="k\n"), id="idempotency_key"),
    pytest.param(lambda m: m.release(HOLD + "\n", owner=OWNER), id="hold_id"),
]


@pytest.mark.parametrize("call", NEWLINE_CASES)
def test_trailing_newline_is_refused_before_any_redis_call(meter: Meter, call: Case) -> None:
    """A regex anchored with `$` also matches before a final newline; the value must not pass."""
    with pytest.raises(InvalidArgument):
        call(meter)
