"""One enum of Lua return codes, one exception tree, one place that maps the first to the second."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class Code(IntEnum):
    """Reply codes of the Lua scripts (first element of every reply)."""

    OK = 0
    REPLAYED = 1
    DRY_RUN = 2  # a dry run of a charge that would succeed; nothing changed
    NOT_LOADED = -1
    CATALOG_NOT_LOADED = -2
    UNKNOWN_TOOL = -3
    TOOL_DISABLED = -4
    CREDIT_TYPE_MISMATCH = -5
    INSUFFICIENT = -6
    IDEMPOTENCY_MISMATCH = -7
    HOLD_NOT_FOUND = -8
    HOLD_NOT_ACTIVE = -9
    CHARGE_NOT_FOUND = -10
    OVER_REFUND = -11
    BAD_ARGUMENT = -12
    AMOUNT_OVERFLOW = -13
    LIMIT = -14
    # The key was used before Redis lost its data: the result lives in SQL (idem_restore.lua).
    IDEMPOTENCY_IN_SQL = -20
    # now_ms is further from Redis TIME than the caller's bound (includes/clock.lua).
    CLOCK_SKEW = -21
    GRANT_EXISTS = -22
    # The account is suspended (PATCH /v1/accounts/{id}): charges and holds are refused.
    ACCOUNT_SUSPENDED = -23
    # The tool's rate limit for this account is used up (lua/includes/rate_limit.lua).
    RATE_LIMITED = -24


class MeterError(Exception):
    """Base of every error the meter raises for what callers and the network do."""


class InvalidArgument(MeterError, ValueError):
    """An argument is outside SPEC §4 (the HTTP layer answers 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InsufficientCredits(MeterError):
    """available - required would drop below -overdraft_limit; nothing changed."""

    def __init__(self, balance: int, available: int, required: int, credit_type: str) -> None:
        super().__init__(f"insufficient {credit_type}: available {available}, required {required}")
        self.balance = balance
        self.available = available
        self.required = required
        self.credit_type = credit_type


class UnknownTool(MeterError):
    def __init__(self, tool: str) -> None:
        super().__init__(f"unknown tool {tool!r}")
        self.tool = tool


class ToolDisabled(MeterError):
    def __init__(self, tool: str) -> None:
        super().__init__(f"tool {tool!r} is switched off")
        self.tool = tool


class IdempotencyConflict(MeterError):
    """The idempotency key was used before with other parameters."""


class HoldNotFound(MeterError):
    def __init__(self, hold_id: str) -> None:
        super().__init__(f"hold {hold_id!r} not found")
        self.hold_id = hold_id


class HoldNotActive(MeterError):
    def __init__(self, hold_id: str, status: str) -> None:
        super().__init__(f"hold {hold_id!r} is {status}, not active")
        self.hold_id = hold_id
        self.status = status


class ChargeNotFound(MeterError):
    def __init__(self, charge_id: str) -> None:
        super().__init__(f"charge {charge_id!r} not found")
        self.charge_id = charge_id


class OverRefund(MeterError):
    def __init__(self, charge_id: str, refundable: int) -> None:
        super().__init__(f"charge {charge_id!r} has only {refundable} left to refund")
        self.charge_id = charge_id
        self.refundable = refundable


class AmountOverflow(MeterError):
    """The amount or resulting balance would exceed CREDITS_MAX (2**53 - 1)."""


class LimitExceeded(MeterError):
    """A per-wallet limit of bounds.py (grants, holds) is reached."""


class GrantExists(MeterError):
    """A grant with this id is in the wallet already: it was made (a caller that names its
    grants, such as a purchase, retried after the idempotency record expired)."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"{subject}: a grant with this id exists")


class AccountSuspended(MeterError):
    """The account is suspended: its charges and holds are refused, nothing changed."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id!r} is suspended")
        self.account_id = account_id


class ClockSkew(MeterError):
    """This process's clock is too far from Redis's: nothing was changed (a clock that is
    wrong would expire grants and holds early or late). Fix the host's time (NTP)."""

    def __init__(self, now_ms: int, server_ms: int) -> None:
        super().__init__(
            f"clock skew: this process says {now_ms} ms, Redis {server_ms} ms "
            f"({now_ms - server_ms:+d} ms); nothing was changed"
        )
        self.now_ms = now_ms
        self.server_ms = server_ms


class RateLimited(MeterError):
    """The rate limit in force (the account's own, else the tool's; calls per period, per
    account) is used up; nothing changed. retry_after_ms: when the next call may pass;
    reset_ms: when the whole limit is back. limit 0: the account may not call the tool."""

    def __init__(self, tool: str, limit: int, retry_after_ms: int, reset_ms: int) -> None:
        retry_s = -(-retry_after_ms // 1000)
        what = (
            f"{tool!r} is blocked for this account (rate limit 0)"
            if limit == 0
            else f"rate limit of {tool!r} reached ({limit} per period)"
        )
        super().__init__(f"{what}: retry in {retry_s} s")
        self.tool = tool
        self.limit = limit
        self.retry_after_ms = retry_after_ms
        self.reset_ms = reset_ms


class WalletNotLoaded(MeterError):
    """Redis has no such wallet and no loader is configured to load it (never read as zero)."""

    def __init__(self, account_id: str, credit_type: str) -> None:
        super().__init__(
            f"wallet {account_id}/{credit_type} is not loaded in Redis and the meter has no "
            "loader: configure one (the SQL loader, or NewAccountLoader for Redis-only use)"
        )
        self.account_id = account_id
        self.credit_type = credit_type


class CatalogNotLoaded(MeterError):
    """The bucket's catalog replica is missing and no catalog source can restore it."""


class ScriptContractError(AssertionError):
    """A script answered something the client never asks for: a bug, not a user error."""


_PASSING = frozenset({int(Code.OK), int(Code.REPLAYED), int(Code.DRY_RUN)})


def raise_for_reply(reply: Sequence[object], subject: str, credit_type: str) -> None:
    """Raises the exception for an error reply; returns for OK, REPLAYED and DRY_RUN.

    Load-and-retry codes (NOT_LOADED, CATALOG_NOT_LOADED, CREDIT_TYPE_MISMATCH) are handled by
    the client before this is called; reaching here with them is a contract error.
    """
    value = _int(reply[0])
    if value in _PASSING:  # every charge: no Code() lookup on the way out
        return
    code = Code(value)
    detail = [_str(x) for x in reply[1:]]
    if code is Code.INSUFFICIENT:
        raise InsufficientCredits(_int(reply[1]), _int(reply[2]), _int(reply[3]), credit_type)
    if code is Code.UNKNOWN_TOOL:
        raise UnknownTool(detail[0])
    if code is Code.TOOL_DISABLED:
        raise ToolDisabled(detail[0])
    if code is Code.IDEMPOTENCY_MISMATCH:
        raise IdempotencyConflict(f"idempotency key reused with other parameters ({subject})")
    if code is Code.HOLD_NOT_FOUND:
        raise HoldNotFound(subject)
    if code is Code.HOLD_NOT_ACTIVE:
        raise HoldNotActive(subject, detail[0])
    if code is Code.CHARGE_NOT_FOUND:
        raise ChargeNotFound(subject)
    if code is Code.OVER_REFUND:
        raise OverRefund(subject, int(detail[0]))
    if code is Code.BAD_ARGUMENT:
        raise InvalidArgument(detail[0], "rejected by the script")
    if code is Code.AMOUNT_OVERFLOW:
        raise AmountOverflow(f"{subject}: {detail[0]} exceeds 2**53 - 1")
    if code is Code.LIMIT:
        raise LimitExceeded(f"{subject}: too many {detail[0]} on the wallet")
    if code is Code.CLOCK_SKEW:
        raise ClockSkew(_int(reply[1]), _int(reply[2]))
    if code is Code.GRANT_EXISTS:
        raise GrantExists(subject)
    if code is Code.ACCOUNT_SUSPENDED:
        raise AccountSuspended(detail[0])
    if code is Code.RATE_LIMITED:
        raise RateLimited(detail[0], _int(reply[2]), _int(reply[3]), _int(reply[4]))
    raise ScriptContractError(f"unexpected reply {code.name} for {subject}")


def _int(x: object) -> int:
    assert isinstance(x, (int, bytes, str)), x
    return int(x)


def _str(x: object) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def mismatched_credit_type(reply: Sequence[object]) -> str:
    """The credit type the tool really uses, as a CREDIT_TYPE_MISMATCH reply names it."""
    assert Code(_int(reply[0])) is Code.CREDIT_TYPE_MISMATCH, reply
    return _str(reply[1])
