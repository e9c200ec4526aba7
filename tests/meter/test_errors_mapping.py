"""Every script return code reaches the caller of the sync Meter as its exception."""

from __future__ import annotations

import time

import pytest
import redis

from meter import (
    AmountOverflow,
    CatalogNotLoaded,
    ChargeNotFound,
    HoldNotActive,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidArgument,
    LimitExceeded,
    Meter,
    MeterError,
    NewAccountLoader,
    OverRefund,
    Tool,
    ToolDisabled,
    UnknownTool,
    WalletNotLoaded,
    ids,
)
from meter.bounds import CREDITS_MAX, GRANTS_PER_WALLET_MAX, HOLDS_PER_WALLET_MAX
from meter.errors import ClockSkew, Code, GrantExists, ScriptContractError, raise_for_reply
from meter.keys import Keys
from meter.redis_conn import sync_client
from tests.meter.helpers import T0_MS, Clock, make_meter

ACCT = "acct-1"
TOOLS = [
    Tool("GPT", 10, "credits"),
    Tool("OFF", 1, "credits", active=False),
    Tool("GEM", 2, "gems"),
]


@pytest.fixture
def m(redis_url: str, key_prefix: str) -> Meter:
    meter = make_meter(redis_url, key_prefix, clock=Clock())
    meter.set_tools(TOOLS)
    return meter


def test_insufficient_credits_carries_balance_available_required_credit_type(m: Meter) -> None:
    m.grant(ACCT, "credits", 15)
    with m.hold(ACCT, "GPT", amount=7), pytest.raises(InsufficientCredits) as err:
        m.charge(ACCT, "GPT")
    e = err.value
    assert (e.balance, e.available, e.required, e.credit_type) == (15, 8, 10, "credits")


def test_insufficient_credits_of_another_credit_type_names_it(m: Meter) -> None:
    with pytest.raises(InsufficientCredits) as err:
        m.charge(ACCT, "GEM", 3)
    assert (err.value.required, err.value.credit_type) == (6, "gems")


def test_unknown_tool(m: Meter) -> None:
    with pytest.raises(UnknownTool) as err:
        m.charge(ACCT, "NOPE")
    assert err.value.tool == "NOPE"


@pytest.mark.parametrize("op", ["charge", "hold"])
def test_tool_disabled(m: Meter, op: str) -> None:
    with pytest.raises(ToolDisabled) as err:
        getattr(m, op)(ACCT, "OFF")
    assert err.value.tool == "OFF"


def test_reused_idempotency_key_with_other_parameters_is_a_conflict(m: Meter) -> None:
    m.grant(ACCT, "credits", 100)
    first = m.charge(ACCT, "GPT", 1, idempotency_key="k-1")
    assert m.charge(ACCT, "GPT", 1, idempotency_key="k-1").replayed
    with pytest.raises(IdempotencyConflict):
        m.charge(ACCT, "GPT", 2, idempotency_key="k-1")
    with pytest.raises(IdempotencyConflict):
        m.grant(ACCT, "credits", 5, idempotency_key="k-1")
    assert m.balance(ACCT, ["credits"]).wallet("credits").balance == 100 - first.amount


def test_unknown_hold_is_hold_not_found_with_and_without_owner(m: Meter) -> None:
    m.grant(ACCT, "credits", 10)
    hold_id = ids.new_id(m.keys.bucket(ACCT))
    for call in (
        lambda: m.settle(hold_id),
        lambda: m.release(hold_id),
        lambda: m.extend(hold_id, 60),
        lambda: m.settle(hold_id, owner=(ACCT, "credits")),
        lambda: m.release(hold_id, owner=(ACCT, "credits")),
        lambda: m.extend(hold_id, 60, owner=(ACCT, "credits")),
    ):
        with pytest.raises(HoldNotFound):
            call()


def test_ended_hold_is_hold_not_active_with_its_status(m: Meter) -> None:
    m.grant(ACCT, "credits", 100)
    h = m.hold(ACCT, "GPT")
    h.settle(4)
    for call in (h.settle, h.release, lambda: h.extend(60)):
        with pytest.raises(HoldNotActive) as err:
            call()
        assert err.value.status == "settled"


def test_unknown_charge_is_charge_not_found(m: Meter) -> None:
    with pytest.raises(ChargeNotFound) as err:
        m.refund(ids.new_id(3))
    assert isinstance(err.value, MeterError)


def test_refund_beyond_the_charge_is_over_refund_with_what_is_left(m: Meter) -> None:
    m.grant(ACCT, "credits", 100)
    charge = m.charge(ACCT, "GPT", 2)
    m.refund(charge.id, 5)
    with pytest.raises(OverRefund) as err:
        m.refund(charge.id, 16)
    assert err.value.refundable == 15


def test_balance_above_credits_max_is_amount_overflow(m: Meter) -> None:
    m.grant(ACCT, "credits", CREDITS_MAX)
    with pytest.raises(AmountOverflow):
        m.grant(ACCT, "credits", 1)
    with pytest.raises(AmountOverflow):
        m.adjust(ACCT, "credits", 1, reason="bonus")


def test_cost_times_quantity_above_credits_max_is_amount_overflow(m: Meter) -> None:
    m.set_tool("HUGE", CREDITS_MAX)
    with pytest.raises(AmountOverflow):
        m.charge(ACCT, "HUGE", 2)


def test_too_many_grants_is_limit_exceeded(m: Meter, redis_sync: redis.Redis) -> None:
    fields = {f"g:x{i}": "1|50|0|p" for i in range(GRANTS_PER_WALLET_MAX)}
    redis_sync.hset(m.keys.wallet(ACCT, "credits"), mapping={"o": "0", **fields})
    with pytest.raises(LimitExceeded):
        m.grant(ACCT, "credits", 1)


def test_too_many_holds_is_limit_exceeded(m: Meter, redis_sync: redis.Redis) -> None:
    m.grant(ACCT, "credits", 10)
    fields = {f"h:x{i}": f"0|{T0_MS + 3_600_000}" for i in range(HOLDS_PER_WALLET_MAX)}
    redis_sync.hset(m.keys.wallet(ACCT, "credits"), mapping=fields)
    with pytest.raises(LimitExceeded):
        m.hold(ACCT, "GPT")


def test_a_script_refusal_is_invalid_argument_naming_the_field(m: Meter) -> None:
    with pytest.raises(InvalidArgument) as err:
        m.grant(ACCT, "credits", 1, grant_id="debt")  # the breakdown's name for the debt
    assert err.value.field == "grant_id"


def test_a_grant_id_in_the_wallet_already_is_grant_exists_not_a_bad_argument(m: Meter) -> None:
    m.grant(ACCT, "credits", 1, grant_id="g-1")
    with pytest.raises(GrantExists):
        m.grant(ACCT, "credits", 1, grant_id="g-1")
    assert m.balance(ACCT, ["credits"]).wallet("credits").balance == 1


def test_missing_wallet_without_a_loader_is_wallet_not_loaded(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix, loader=None)
    m.set_tools(TOOLS)
    with pytest.raises(WalletNotLoaded) as err:
        m.charge(ACCT, "GEM")
    assert (err.value.account_id, err.value.credit_type) == (ACCT, "gems")
    with pytest.raises(WalletNotLoaded):
        m.grant(ACCT, "credits", 5)
    with pytest.raises(WalletNotLoaded):
        m.balance(ACCT, ["credits"])


def test_missing_catalog_without_a_loader_is_catalog_not_loaded(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix, loader=None)
    with pytest.raises(CatalogNotLoaded):
        m.charge(ACCT, "GPT")
    with pytest.raises(CatalogNotLoaded):
        m.hold(ACCT, "GPT")


def test_load_codes_are_answered_by_loading_not_raised(redis_url: str, key_prefix: str) -> None:
    """NOT_LOADED, CATALOG_NOT_LOADED and CREDIT_TYPE_MISMATCH never reach the caller."""
    m = make_meter(redis_url, key_prefix, loader=NewAccountLoader(tools=TOOLS))
    m.grant(ACCT, "gems", 10)  # NOT_LOADED -> hydrate
    charge = m.charge(ACCT, "GEM")  # CATALOG_NOT_LOADED -> restore; then credit type learnt
    assert (charge.credit_type, charge.amount, charge.balance) == ("gems", 2, 8)


@pytest.mark.parametrize(
    ("reply", "exc"),
    [
        ([Code.INSUFFICIENT, 1, 2, 3], InsufficientCredits),
        ([Code.UNKNOWN_TOOL, b"T"], UnknownTool),
        ([Code.TOOL_DISABLED, b"T"], ToolDisabled),
        ([Code.IDEMPOTENCY_MISMATCH], IdempotencyConflict),
        ([Code.HOLD_NOT_FOUND], HoldNotFound),
        ([Code.HOLD_NOT_ACTIVE, b"released"], HoldNotActive),
        ([Code.CHARGE_NOT_FOUND], ChargeNotFound),
        ([Code.OVER_REFUND, 3], OverRefund),
        ([Code.BAD_ARGUMENT, b"amount"], InvalidArgument),
        ([Code.AMOUNT_OVERFLOW, b"9007199254740992"], AmountOverflow),
        ([Code.LIMIT, b"holds"], LimitExceeded),
        ([Code.CLOCK_SKEW, b"1800000", b"1000"], ClockSkew),
        ([Code.GRANT_EXISTS], GrantExists),
        ([Code.NOT_LOADED], ScriptContractError),
        ([Code.CATALOG_NOT_LOADED], ScriptContractError),
        ([Code.CREDIT_TYPE_MISMATCH, b"gems"], ScriptContractError),
    ],
)
def test_every_error_code_has_its_exception(reply: list[object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        raise_for_reply(reply, "subject", "credits")


def test_every_code_is_mapped_or_returns() -> None:
    for code in (Code.OK, Code.REPLAYED, Code.DRY_RUN):
        assert raise_for_reply([int(code)], "s", "credits") is None
    for code in set(Code) - {Code.OK, Code.REPLAYED, Code.DRY_RUN}:
        with pytest.raises((MeterError, ScriptContractError)):
            raise_for_reply([int(code), b"1", b"2", b"3", b"4"], "s", "credits")


def test_user_errors_are_meter_errors() -> None:
    for exc in (
        AmountOverflow,
        CatalogNotLoaded,
        ChargeNotFound,
        HoldNotActive,
        HoldNotFound,
        IdempotencyConflict,
        InsufficientCredits,
        InvalidArgument,
        LimitExceeded,
        OverRefund,
        ToolDisabled,
        UnknownTool,
        WalletNotLoaded,
        ClockSkew,
        GrantExists,
    ):
        assert issubclass(exc, MeterError)
    assert not issubclass(ScriptContractError, MeterError)


def test_a_clock_2h_fast_is_clock_skew_and_changes_nothing(
    m: Meter, redis_url: str, key_prefix: str
) -> None:
    """The wall clock is bounded by default; a clock the caller passes is bounded when it
    asks (check_clock=True), as a worker whose host clock is wrong would be."""
    m.grant(ACCT, "credits", 100)
    fast = Meter(
        sync_client(redis_url),
        keys=Keys(prefix=key_prefix),
        loader=NewAccountLoader(),
        clock_ms=lambda: int(time.time() * 1000) + 7_200_000,
        check_clock=True,
    )
    with pytest.raises(ClockSkew) as err:
        fast.charge(ACCT, "GPT")
    assert err.value.now_ms - err.value.server_ms > 7_100_000
    assert m.balance(ACCT, ["credits"]).wallet("credits").balance == 100
