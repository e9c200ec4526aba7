"""Sans-IO core of every meter operation: validate, build the script call, parse the reply.

Each operation is a generator that yields requests (`Eval`, `Command`, `LoadWallet`,
`LoadCatalog`) and receives their answers; `Meter` and `AsyncMeter` are thin drivers that
perform the I/O. So the logic — including "not loaded -> hydrate -> retry" — exists once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from meter import bounds, rate_limits, validate, wire
from meter.errors import (
    ChargeNotFound,
    Code,
    HoldNotActive,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidArgument,
    ScriptContractError,
    mismatched_credit_type,
    raise_for_reply,
)
from meter.ids import bucket_of, new_id
from meter.keys import Keys, due_member
from meter.models import (
    AccountBalance,
    AdjustResult,
    ChargeCheck,
    ChargeResult,
    ClawbackResult,
    ExpireResult,
    ExtendResult,
    GrantInfo,
    GrantResult,
    HoldResult,
    RateLimitState,
    RefundResult,
    ReleaseResult,
    SettleResult,
    StoredResult,
    Tool,
    WalletBalance,
    WalletSnapshot,
)
from meter.rate_limits import overrides_replica
from meter.signatures import (
    ACCOUNT_SET,
    ADJUST,
    BALANCE,
    BALANCE_GRANT,
    CATALOG_SET,
    CHARGE,
    CLAWBACK,
    EXPIRE,
    EXTEND,
    GRANT,
    HOLD,
    HYDRATE,
    IDEM_RESTORE,
    REFUND,
    RELEASE,
    SETTLE,
    THRESHOLD_SET,
    Reply,
    Signature,
)
from meter.times import now_ms

R = TypeVar("R")
DEFAULT_CREDIT_TYPE = "credits"  # first guess for a tool not seen yet; corrected by the script
INSUFFICIENT_REASON = "insufficient-credits"  # ChargeCheck.reason: the charge's problem slug


@dataclass(slots=True)
class Eval:
    """A call of a registered script; `bucket` lets the async client batch charges."""

    script: str
    keys: list[str]
    args: list[str]
    bucket: int

    @classmethod
    def of(
        cls,
        sig: Signature,
        bucket: int,
        keys: dict[str, str | list[dict[str, str]]],
        args: dict[str, str | list[dict[str, str]]],
    ) -> Eval:
        """The call with its KEYS and ARGV given by their declared names."""
        return cls(sig.script, sig.key_list(**keys), sig.arg_list(**args), bucket)


@dataclass(slots=True)
class Command:
    """A plain read (HMGET, GET, HGETALL...)."""

    args: tuple[str, ...]


@dataclass(slots=True)
class LoadWallet:
    account_id: str
    credit_type: str
    create: bool = True  # False for reads: an account the store does not know stays unknown


@dataclass(slots=True)
class LoadCatalog:
    pass


@dataclass(slots=True)
class LoadAccountTypes:
    account_id: str


@dataclass(slots=True)
class LoadCharge:
    charge_id: str


@dataclass(slots=True)
class LoadHoldOwner:
    hold_id: str


@dataclass(slots=True)
class LoadStoredResult:
    account_id: str
    idempotency_key: str


Request = (
    Eval
    | Command
    | LoadWallet
    | LoadCatalog
    | LoadAccountTypes
    | LoadCharge
    | LoadHoldOwner
    | LoadStoredResult
)
# Builds a script's replay reply from what SQL kept of the request (see _with_loading).
FromSql = Callable[[StoredResult], list[Any]]
Op = Generator[Request, Any, R]


@dataclass
class Env:
    """What every operation reads: key names, the clock, and the tool -> credit type cache."""

    keys: Keys
    clock_ms: Callable[[], int] = now_ms
    idempotency_ttl_s: int = bounds.IDEMPOTENCY_TTL_S
    tool_credit_types: dict[str, str] = field(default_factory=dict)
    # The most the clock may differ from Redis TIME in the scripts that change wallets
    # (lua/includes/clock); None: a clock the caller drives itself, not checked.
    clock_skew_ms_max: int | None = bounds.CLOCK_SKEW_MS_MAX

    def now_arg(self) -> str:
        """ARGV now_ms of a wallet-changing script: with the skew bound when there is one."""
        now = self.clock_ms()
        return str(now) if self.clock_skew_ms_max is None else f"{now}:{self.clock_skew_ms_max}"


def fingerprint(*parts: object) -> str:
    """Identifies a request's parameters, so a reused idempotency key with others is caught."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def as_text(reply: object) -> str:
    """A reply value as str (the clients read bytes: decode_responses is off)."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _code(reply: list[Any]) -> int:
    return int(reply[0])


# --- loading: the "not loaded" answers -------------------------------------------------


def hydrate_eval(keys: Keys, account_id: str, credit_type: str, snap: WalletSnapshot) -> Eval:
    bucket = keys.bucket(account_id)
    assert len(snap.grants) <= bounds.GRANTS_PER_WALLET_MAX, "loader returned too many grants"
    return Eval.of(
        HYDRATE,
        bucket,
        keys={
            "wallet": keys.wallet(account_id, credit_type),
            "account": keys.account(account_id),
            "due": keys.due(bucket),
            "holds": [{"hold": keys.hold(bucket, h.id)} for h in snap.holds],
        },
        args={
            "account_id": account_id,
            "credit_type": credit_type,
            "overdraft_limit": str(snap.overdraft_limit),
            "status": "suspended" if snap.suspended else "active",
            "rate_limits": overrides_replica(dict(snap.rate_limits)),
            "debt": str(snap.debt),
            "grants": [
                {
                    "grant_id": g.id,
                    "remaining": str(g.remaining),
                    "priority": str(g.priority),
                    "expires_ms": str(g.expires_at_ms),
                    "category": g.category,
                }
                for g in snap.grants
            ],
            "holds": [
                {
                    "hold_id": h.id,
                    "amount": str(h.amount),
                    "expires_ms": str(h.expires_at_ms),
                    "tool": h.tool,
                }
                for h in snap.holds
            ],
            "due_member": due_member(account_id, credit_type),
            "low_threshold": _threshold_arg(snap.low_threshold),
            "topup_threshold": _threshold_arg(snap.topup_threshold),
        },
    )


def _threshold_arg(threshold: int | None) -> str:
    return "" if threshold is None else str(threshold)


def idem_restore_evals(
    keys: Keys, account_id: str, used: tuple[tuple[str, int], ...], now: int
) -> list[Eval]:
    """The script calls marking (key, expires_at_ms) pairs SQL holds as answered from SQL."""
    assert len(used) <= bounds.IDEM_RESTORE_MAX, "loader returned too many keys"
    bucket = keys.bucket(account_id)
    out = []
    for start in range(0, len(used), bounds.IDEM_RESTORE_BATCH_MAX):
        chunk = used[start : start + bounds.IDEM_RESTORE_BATCH_MAX]
        out.append(
            Eval.of(
                IDEM_RESTORE,
                bucket,
                keys={
                    "records": [{"idempotency": keys.idempotency(account_id, k)} for k, _ in chunk]
                },
                args={
                    "now_ms": str(now),
                    "records": [{"expires_at_ms": str(ms)} for _, ms in chunk],
                },
            )
        )
    return out


def restore_idempotency(env: Env, account_id: str, used: tuple[tuple[str, int], ...]) -> Op[int]:
    """Marks keys SQL holds (key, expires_at_ms) as answered from SQL -> how many were new.
    Run before an account's wallet is hydrated, and for entries SQL has that a Redis
    restarted from a short append-only file lost: a retry of a request that reached SQL is
    then answered from SQL, never applied again (lua/idem_restore.lua, includes/idem.lua)."""
    written = 0
    account_id = validate.account_id(account_id)
    for ev in idem_restore_evals(env.keys, account_id, used, env.clock_ms()):
        reply = yield ev
        raise_for_reply(reply, f"idempotency restore {account_id}", "")
        written += IDEM_RESTORE.read(reply).int("written")
    return written


def _hydrate(env: Env, account_id: str, credit_type: str, *, create: bool = True) -> Op[bool]:
    """Loads the wallet into Redis; False when `create` is off and the account is unknown."""
    snap = yield LoadWallet(account_id, credit_type, create)
    if snap is None:
        assert not create, "the loader creates accounts on first touch"
        return False
    yield from restore_idempotency(env, account_id, snap.idempotency)
    reply = yield hydrate_eval(env.keys, account_id, credit_type, snap)
    raise_for_reply(reply, f"hydrate {account_id}/{credit_type}", credit_type)
    return True


def catalog_evals(keys: Keys, tools: list[Tool], mode: str) -> list[Eval]:
    args: dict[str, str | list[dict[str, str]]] = {
        "mode": mode,
        "tools": [
            {
                "tool": t.name,
                "cost": str(t.cost),
                "credit_type": t.credit_type,
                "active": "1" if t.active else "0",
                "rate_limit": rate_limits.replica_arg(t.rate_limit),
            }
            for t in tools
        ],
    }
    return [
        Eval.of(CATALOG_SET, b, keys={"catalog": keys.catalog(b)}, args=args)
        for b in keys.all_buckets()
    ]


def _restore_catalog(env: Env) -> Op[None]:
    tools = yield LoadCatalog()
    for ev in catalog_evals(env.keys, tools, "replace"):
        reply = yield ev
        raise_for_reply(reply, "catalog restore", "")


class _UnknownAccount(Exception):
    """The account is unknown to the store and the operation may not create it."""

    def __init__(self, reply: list[Any], credit_type: str) -> None:
        super().__init__("unknown account")
        self.reply = reply
        self.credit_type = credit_type


def _with_loading(
    env: Env,
    sig: Signature,
    build: Callable[[str], Eval],
    account_id: str,
    tool: str | None,
    credit_type: str | None,
    subject: str,
    *,
    idem: str = "",
    from_sql: FromSql | None = None,
    create: bool = True,
) -> Op[tuple[Reply, str]]:
    """Runs a wallet script; hydrates, restores the catalog or learns a tool's credit type
    when the script asks, then retries. Returns the final reply and the credit type used.
    With `create` off, an account the store does not know is not created: _UnknownAccount
    carries the script's NOT_LOADED reply.

    A key that ran before Redis lost its data is answered from SQL: `from_sql` turns what
    SQL kept into the reply the script would have replayed."""
    for _ in range(bounds.HYDRATE_ATTEMPTS_MAX + 1):
        ct = credit_type or env.tool_credit_types.get(tool or "", DEFAULT_CREDIT_TYPE)
        ev = build(ct)
        assert ev.script == sig.script, (ev.script, sig.script)
        reply = yield ev
        code = _code(reply)
        if code == Code.IDEMPOTENCY_IN_SQL:
            assert from_sql is not None, f"{subject}: no idempotency record to answer from SQL"
            stored = yield LoadStoredResult(account_id, idem)
            if stored is None:
                raise ScriptContractError(f"{subject}: key {idem!r} marked as in SQL, not found")
            return sig.read(from_sql(stored)), stored.credit_type
        if code == Code.NOT_LOADED:
            if not (yield from _hydrate(env, account_id, ct, create=create)):
                raise _UnknownAccount(reply, ct)
        elif code == Code.CATALOG_NOT_LOADED:
            yield from _restore_catalog(env)
        elif code == Code.CREDIT_TYPE_MISMATCH:
            assert tool is not None
            env.tool_credit_types[tool] = mismatched_credit_type(reply)
        else:
            raise_for_reply(reply, subject, ct)
            return sig.read(reply), ct
    raise ScriptContractError(
        f"{subject}: still not loaded after {bounds.HYDRATE_ATTEMPTS_MAX} loads"
    )


def _expect(stored: StoredResult, kind: str, *, subject: str) -> None:
    """The key's stored request was this operation, or the key was reused for another."""
    if stored.kind != kind:
        raise IdempotencyConflict(
            f"idempotency key reused with other parameters ({subject}; it was a {stored.kind})"
        )


def _same_change(stored: StoredResult, credit_type: str, amount: int, subject: str) -> None:
    if (stored.credit_type, stored.amount) != (credit_type, amount):
        raise IdempotencyConflict(f"idempotency key reused with other parameters ({subject})")


def _hold_done(hold_id: str) -> FromSql:
    """A settle of this hold that ran before Redis lost its data: the hold is settled, so
    answer as for a hold that is not active and change nothing. A key SQL knows from any
    other request was reused."""

    def from_sql(stored: StoredResult) -> list[Any]:
        if stored.hold_id == hold_id:
            raise HoldNotActive(hold_id, "settled")
        raise IdempotencyConflict(f"idempotency key reused with other parameters ({hold_id})")

    return from_sql


# --- operations ---------------------------------------------------------------------------


def charge(
    env: Env,
    account_id: str,
    tool: str,
    quantity: int = 1,
    *,
    idempotency_key: str | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Op[ChargeResult]:
    reply, ct = yield from _charge_call(
        env, account_id, tool, quantity, idempotency_key, description, metadata, dry_run=False
    )
    return ChargeResult(
        id=reply.text("entry_id"),
        account_id=account_id,
        tool=tool,
        credit_type=ct,
        amount=reply.int("amount"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        breakdown=wire.parse_breakdown(reply.text("breakdown")),
        replayed=reply.replayed,
        rate_limit=None if reply.replayed else _rate_limit_state(reply),
    )


def _rate_limit_state(reply: Reply) -> RateLimitState | None:
    """The charge reply's rate limit fields (left out when the call has no limit)."""
    if not reply.has("rate_limit"):
        return None
    return RateLimitState(
        limit=reply.int("rate_limit"),
        remaining=reply.int("rate_remaining"),
        reset_ms=reply.int("rate_reset_ms"),
    )


def charge_check(
    env: Env,
    account_id: str,
    tool: str,
    quantity: int = 1,
    *,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Op[ChargeCheck]:
    """The charge's dry run: the same script and checks, nothing written. Errors a charge
    raises are raised the same (UnknownTool, ToolDisabled...), except InsufficientCredits,
    which is the answer "would not succeed"."""
    try:
        reply, ct = yield from _charge_call(
            env, account_id, tool, quantity, None, description, metadata, dry_run=True
        )
    except _UnknownAccount as unknown:
        # An account the store has never seen: answered as an empty wallet, as a balance
        # read answers it. A dry run creates nothing; the welcome grants come with the
        # account's first real request.
        amount = int(unknown.reply[1])
        return ChargeCheck(
            account_id=account_id,
            tool=tool,
            credit_type=unknown.credit_type,
            would_succeed=amount == 0,
            amount=amount,
            balance=0,
            available=0,
            reason=None if amount == 0 else INSUFFICIENT_REASON,
        )
    except InsufficientCredits as exc:
        return ChargeCheck(
            account_id=account_id,
            tool=tool,
            credit_type=exc.credit_type,
            would_succeed=False,
            amount=exc.required,
            balance=exc.balance,
            available=exc.available,
            reason=INSUFFICIENT_REASON,
        )
    if reply.code != Code.DRY_RUN:
        raise ScriptContractError(f"charge {tool}: dry run answered {reply.code}")
    return ChargeCheck(
        account_id=account_id,
        tool=tool,
        credit_type=ct,
        would_succeed=True,
        amount=reply.int("amount"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        rate_limit=_rate_limit_state(reply),
    )


def _charge_call(
    env: Env,
    account_id: str,
    tool: str,
    quantity: int,
    idempotency_key: str | None,
    description: str | None,
    metadata: dict[str, Any] | None,
    *,
    dry_run: bool,
) -> Op[tuple[Reply, str]]:
    account_id = validate.account_id(account_id)
    tool = validate.tool(tool)
    quantity = validate.quantity(quantity)
    desc = validate.text("description", description, bounds.DESCRIPTION_LEN_MAX)
    meta = validate.metadata(metadata)
    keys = env.keys
    bucket = keys.bucket(account_id)
    entry_id = new_id(bucket)
    idem = validate.idempotency_key(idempotency_key) if idempotency_key is not None else entry_id
    fp = fingerprint("charge", account_id, tool, quantity, desc, meta)

    def build(ct: str) -> Eval:
        return Eval.of(
            CHARGE,
            bucket,
            keys={
                "catalog": keys.catalog(bucket),
                "journal": keys.journal(bucket),
                "charges": [
                    {
                        "wallet": keys.wallet(account_id, ct),
                        "idempotency": keys.idempotency(account_id, idem),
                        "record": keys.charge(bucket, entry_id),
                        "events": keys.events(bucket),
                    }
                ],
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "charges": [
                    {
                        # "": a dry run (no entry), so a charge carries no flag for it
                        "entry_id": "" if dry_run else entry_id,
                        "account_id": account_id,
                        "credit_type": ct,
                        "tool": tool,
                        "quantity": str(quantity),
                        "fingerprint": fp,
                        "idempotency_key": idem,
                        "description": desc,
                        "metadata": meta,
                    }
                ],
            },
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "charge", subject=f"charge {tool}")
        if (stored.tool, stored.quantity) != (tool, quantity):
            raise IdempotencyConflict(
                f"idempotency key reused with other parameters (charge {tool})"
            )
        balance = stored.balance_after
        return CHARGE.reply_of(
            Code.REPLAYED,
            entry_id=stored.id,
            amount=-stored.amount,
            balance=balance,
            available=balance,
            held=0,
            breakdown=stored.breakdown,  # a replay counts nothing: no rate limit figures
        )

    return (
        yield from _with_loading(
            env,
            CHARGE,
            build,
            account_id,
            tool,
            None,
            f"charge {tool}",
            idem=idem,
            from_sql=from_sql,
            create=not dry_run,
        )
    )


def hold(
    env: Env,
    account_id: str,
    tool: str,
    *,
    quantity: int = 1,
    amount: int | None = None,
    ttl_s: int = bounds.HOLD_TTL_S_DEFAULT,
    idempotency_key: str | None = None,
) -> Op[HoldResult]:
    account_id = validate.account_id(account_id)
    tool = validate.tool(tool)
    quantity = validate.quantity(quantity)
    fixed = "" if amount is None else str(validate.credits("amount", amount))
    ttl_s = validate.ttl_s("ttl_seconds", ttl_s)
    keys = env.keys
    bucket = keys.bucket(account_id)
    hold_id = new_id(bucket)
    idem = validate.idempotency_key(idempotency_key) if idempotency_key is not None else hold_id
    fp = fingerprint("hold", account_id, tool, quantity, fixed, ttl_s)

    def build(ct: str) -> Eval:
        return Eval.of(
            HOLD,
            bucket,
            keys={
                "wallet": keys.wallet(account_id, ct),
                "idempotency": keys.idempotency(account_id, idem),
                "hold": keys.hold(bucket, hold_id),
                "catalog": keys.catalog(bucket),
                "journal": keys.journal(bucket),
                "due": keys.due(bucket),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "hold_id": hold_id,
                "account_id": account_id,
                "credit_type": ct,
                "tool": tool,
                "quantity": str(quantity),
                "amount": fixed,
                "ttl_s": str(ttl_s),
                "fingerprint": fp,
                "idempotency_key": idem,
                "due_member": due_member(account_id, ct),
            },
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "hold", subject=f"hold {tool}")
        if stored.tool != tool:
            raise IdempotencyConflict(f"idempotency key reused with other parameters (hold {tool})")
        held, balance = stored.amount, stored.balance_after
        return HOLD.reply_of(
            Code.REPLAYED,
            hold_id=stored.id,
            amount=held,
            expires_ms=stored.expires_at_ms,
            balance=balance,
            available=balance - held,
            held=held,
        )

    reply, ct = yield from _with_loading(
        env, HOLD, build, account_id, tool, None, f"hold {tool}", idem=idem, from_sql=from_sql
    )
    return HoldResult(
        id=reply.text("hold_id"),
        account_id=account_id,
        tool=tool,
        credit_type=ct,
        amount=reply.int("amount"),
        expires_at_ms=reply.int("expires_ms"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        replayed=reply.replayed,
    )


_HOLD_OWNER = (wire.HoldField.ACCOUNT.value, wire.HoldField.CREDIT_TYPE.value)


def _hold_owner(
    env: Env, hold_id: str, owner: tuple[str, str] | None = None
) -> Op[tuple[int, str, str]]:
    """(bucket, account_id, credit_type) of a hold: as the caller knows it, or read from its
    Redis record."""
    hold_id = validate.entity_id("hold_id", hold_id)
    bucket = bucket_of(hold_id)
    if bucket >= env.keys.buckets:
        raise InvalidArgument("hold_id", "not an id of this deployment")
    if owner is not None:
        return bucket, owner[0], owner[1]
    key = env.keys.hold(bucket, hold_id)
    raw = yield Command(("HMGET", key, *_HOLD_OWNER))
    if raw[0] is None:
        # Redis lost the hold with its wallet: loading the wallet restores the records
        # of its active holds (a hold no longer active stays not found).
        owner_known = yield LoadHoldOwner(hold_id)
        if owner_known is None:
            raise HoldNotFound(hold_id)
        yield from _hydrate(env, owner_known[0], owner_known[1])
        raw = yield Command(("HMGET", key, *_HOLD_OWNER))
        if raw[0] is None:
            raise HoldNotFound(hold_id)
    return bucket, as_text(raw[0]), as_text(raw[1])


def _charge_owner(env: Env, charge_id: str) -> Op[tuple[int, str, str, str]]:
    """(bucket, account_id, credit_type, record key) of a charge, from its Redis charge key:
    its record, or a pointer to the record at its idempotency key."""
    charge_id = validate.entity_id("charge_id", charge_id)
    bucket = bucket_of(charge_id)
    if bucket >= env.keys.buckets:
        raise InvalidArgument("charge_id", "not an id of this deployment")
    key = env.keys.charge(bucket, charge_id)
    raw = yield Command(("GET", key))
    if raw is None:
        # Redis forgot the charge (its record lives 25 h, or Redis lost data): the durable
        # store has it. SET NX: a concurrent restore or refund's newer record wins.
        rec = yield LoadCharge(charge_id)
        if rec is None:
            raise ChargeNotFound(charge_id)
        value = wire.charge_record_value(rec)
        yield Command(("SET", key, value, "NX", "EX", str(bounds.CHARGE_RECORD_TTL_S)))
        raw = yield Command(("GET", key))
        if raw is None:
            raise ChargeNotFound(charge_id)
    owner = wire.charge_record_owner(as_text(raw))
    if owner.idempotency_key is not None:
        key = env.keys.idempotency(owner.account_id, owner.idempotency_key)
    return bucket, owner.account_id, owner.credit_type, key


def settle(
    env: Env,
    hold_id: str,
    amount: int | None = None,
    *,
    idempotency_key: str | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    owner: tuple[str, str] | None = None,
) -> Op[SettleResult]:
    wanted = "" if amount is None else str(validate.credits("amount", amount))
    desc = validate.text("description", description, bounds.DESCRIPTION_LEN_MAX)
    meta = validate.metadata(metadata)
    idem_given = None if idempotency_key is None else validate.idempotency_key(idempotency_key)
    bucket, account_id, ct = yield from _hold_owner(env, hold_id, owner)
    keys = env.keys
    entry_id = new_id(bucket)
    idem = idem_given or entry_id
    fp = fingerprint("settle", hold_id, wanted, desc, meta)

    def build(ct: str) -> Eval:
        return Eval.of(
            SETTLE,
            bucket,
            keys={
                "hold": keys.hold(bucket, hold_id),
                "wallet": keys.wallet(account_id, ct),
                "idempotency": keys.idempotency(account_id, idem),
                "journal": keys.journal(bucket),
                "record": keys.charge(bucket, entry_id),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "hold_id": hold_id,
                "entry_id": entry_id,
                "account_id": account_id,
                "credit_type": ct,
                "amount": wanted,
                "fingerprint": fp,
                "idempotency_key": idem,
                "description": desc,
                "metadata": meta,
            },
        )

    reply, _ = yield from _with_loading(
        env, SETTLE, build, account_id, None, ct, hold_id, idem=idem, from_sql=_hold_done(hold_id)
    )
    return SettleResult(
        entry_id=reply.text("entry_id"),
        hold_id=hold_id,
        charged=reply.int("charged"),
        released=reply.int("released"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        replayed=reply.replayed,
    )


def release(
    env: Env,
    hold_id: str,
    *,
    idempotency_key: str | None = None,
    owner: tuple[str, str] | None = None,
) -> Op[ReleaseResult]:
    idem_given = None if idempotency_key is None else validate.idempotency_key(idempotency_key)
    bucket, account_id, ct = yield from _hold_owner(env, hold_id, owner)
    keys = env.keys
    idem = idem_given or new_id(bucket)
    fp = fingerprint("release", hold_id)

    def build(ct: str) -> Eval:
        return Eval.of(
            RELEASE,
            bucket,
            keys={
                "hold": keys.hold(bucket, hold_id),
                "wallet": keys.wallet(account_id, ct),
                "idempotency": keys.idempotency(account_id, idem),
                "journal": keys.journal(bucket),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "hold_id": hold_id,
                "account_id": account_id,
                "credit_type": ct,
                "fingerprint": fp,
                "idempotency_key": idem,
            },
        )

    reply, _ = yield from _with_loading(
        env, RELEASE, build, account_id, None, ct, hold_id, idem=idem, from_sql=_hold_done(hold_id)
    )
    return ReleaseResult(
        hold_id=hold_id,
        released=reply.int("released"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        replayed=reply.replayed,
    )


def extend(
    env: Env,
    hold_id: str,
    ttl_s: int,
    *,
    idempotency_key: str | None = None,
    owner: tuple[str, str] | None = None,
) -> Op[ExtendResult]:
    ttl_s = validate.ttl_s("ttl_seconds", ttl_s)
    idem_given = None if idempotency_key is None else validate.idempotency_key(idempotency_key)
    bucket, account_id, ct = yield from _hold_owner(env, hold_id, owner)
    keys = env.keys
    idem = idem_given or new_id(bucket)
    fp = fingerprint("extend", hold_id, ttl_s)

    def build(ct: str) -> Eval:
        return Eval.of(
            EXTEND,
            bucket,
            keys={
                "hold": keys.hold(bucket, hold_id),
                "wallet": keys.wallet(account_id, ct),
                "idempotency": keys.idempotency(account_id, idem),
                "journal": keys.journal(bucket),
                "due": keys.due(bucket),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "hold_id": hold_id,
                "account_id": account_id,
                "credit_type": ct,
                "ttl_s": str(ttl_s),
                "fingerprint": fp,
                "idempotency_key": idem,
                "due_member": due_member(account_id, ct),
            },
        )

    reply, _ = yield from _with_loading(
        env, EXTEND, build, account_id, None, ct, hold_id, idem=idem, from_sql=_hold_done(hold_id)
    )
    return ExtendResult(
        hold_id=hold_id, expires_at_ms=reply.int("expires_ms"), replayed=reply.replayed
    )


def refund(
    env: Env,
    charge_id: str,
    amount: int | None = None,
    *,
    reason: str | None = None,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Op[RefundResult]:
    wanted = "" if amount is None else str(validate.credits("amount", amount, low=1))
    why = validate.text("reason", reason, bounds.DESCRIPTION_LEN_MAX)
    meta = validate.metadata(metadata)
    idem_given = None if idempotency_key is None else validate.idempotency_key(idempotency_key)
    bucket, account_id, ct, record_key = yield from _charge_owner(env, charge_id)
    keys = env.keys
    entry_id = new_id(bucket)
    idem = idem_given or entry_id
    fp = fingerprint("refund", charge_id, wanted, why, meta)
    successor_paid, successor_promo = new_id(bucket), new_id(bucket)

    def build(ct: str) -> Eval:
        return Eval.of(
            REFUND,
            bucket,
            keys={
                "record": record_key,
                "wallet": keys.wallet(account_id, ct),
                "idempotency": keys.idempotency(account_id, idem),
                "journal": keys.journal(bucket),
                "due": keys.due(bucket),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "entry_id": entry_id,
                "charge_id": charge_id,
                "account_id": account_id,
                "credit_type": ct,
                "amount": wanted,
                "successor_paid": successor_paid,
                "successor_promotional": successor_promo,
                "fingerprint": fp,
                "idempotency_key": idem,
                "reason": why,
                "metadata": meta,
                "due_member": due_member(account_id, ct),
            },
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "refund", subject=f"refund of {charge_id}")
        if stored.reference_id != charge_id:
            raise IdempotencyConflict(f"idempotency key reused with other parameters ({charge_id})")
        balance = stored.balance_after
        return REFUND.reply_of(
            Code.REPLAYED,
            entry_id=stored.id,
            amount=stored.amount,
            balance=balance,
            available=balance,
            held=0,
            refunded_total=stored.refunded_total,
            breakdown=stored.breakdown,
        )

    reply, _ = yield from _with_loading(
        env, REFUND, build, account_id, None, ct, charge_id, idem=idem, from_sql=from_sql
    )
    return RefundResult(
        id=reply.text("entry_id"),
        charge_id=charge_id,
        amount=reply.int("amount"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        refunded_total=reply.int("refunded_total"),
        breakdown=wire.parse_breakdown(reply.text("breakdown")),
        replayed=reply.replayed,
    )


def grant(
    env: Env,
    account_id: str,
    credit_type: str,
    amount: int,
    *,
    category: str = "promotional",
    priority: int = bounds.PRIORITY_DEFAULT,
    expires_at_ms: int | None = None,
    source: str = "admin",
    reference_id: str | None = None,
    idempotency_key: str | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    grant_id: str | None = None,
) -> Op[GrantResult]:
    account_id = validate.account_id(account_id)
    credit_type = validate.credit_type(credit_type)
    amount = validate.credits("amount", amount, low=1)
    category = validate.category(category)
    priority = validate.priority(priority)
    expires = validate.expires_ms(expires_at_ms, env.clock_ms())
    source = validate.text("source", source, bounds.SOURCE_LEN_MAX, required=True)
    ref = validate.text("reference_id", reference_id, bounds.REFERENCE_LEN_MAX)
    desc = validate.text("description", description, bounds.DESCRIPTION_LEN_MAX)
    meta = validate.metadata(metadata)
    keys = env.keys
    bucket = keys.bucket(account_id)
    entry_id = new_id(bucket)
    gid = entry_id if grant_id is None else validate.entity_id("grant_id", grant_id)
    idem = validate.idempotency_key(idempotency_key) if idempotency_key is not None else entry_id
    fp = fingerprint(
        "grant",
        account_id,
        credit_type,
        amount,
        category,
        priority,
        expires,
        source,
        ref,
        desc,
        meta,
        grant_id,
    )

    def build(ct: str) -> Eval:
        return Eval.of(
            GRANT,
            bucket,
            keys={
                "wallet": keys.wallet(account_id, ct),
                "idempotency": keys.idempotency(account_id, idem),
                "journal": keys.journal(bucket),
                "due": keys.due(bucket),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "entry_id": entry_id,
                "grant_id": gid,
                "account_id": account_id,
                "credit_type": ct,
                "amount": str(amount),
                "category": category,
                "priority": str(priority),
                "expires_ms": str(expires),
                "source": source,
                "reference_id": ref,
                "fingerprint": fp,
                "idempotency_key": idem,
                "description": desc,
                "metadata": meta,
                "due_member": due_member(account_id, ct),
            },
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "grant", subject="grant")
        _same_change(stored, credit_type, amount, "grant")
        balance = stored.balance_after
        new_grant = next(
            (p.grant_id for p in wire.parse_breakdown(stored.breakdown) if p.grant_id != wire.DEBT),
            gid,
        )
        return GRANT.reply_of(
            Code.REPLAYED,
            entry_id=stored.id,
            grant_id=new_grant,
            amount=stored.amount,
            balance=balance,
            available=balance,
            held=0,
        )

    reply, _ = yield from _with_loading(
        env, GRANT, build, account_id, None, credit_type, "grant", idem=idem, from_sql=from_sql
    )
    return GrantResult(
        id=reply.text("entry_id"),
        grant_id=reply.text("grant_id"),
        amount=reply.int("amount"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        replayed=reply.replayed,
    )


def adjust(
    env: Env,
    account_id: str,
    credit_type: str,
    amount: int,
    *,
    reason: str,
    category: str = "promotional",
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Op[AdjustResult]:
    account_id = validate.account_id(account_id)
    credit_type = validate.credit_type(credit_type)
    amount = validate.integer("amount", amount, -bounds.CREDITS_MAX, bounds.CREDITS_MAX)
    if amount == 0:
        raise InvalidArgument("amount", "must not be 0")
    category = validate.category(category)
    why = validate.text("reason", reason, bounds.DESCRIPTION_LEN_MAX, required=True)
    meta = validate.metadata(metadata)
    keys = env.keys
    bucket = keys.bucket(account_id)
    entry_id = new_id(bucket)
    idem = validate.idempotency_key(idempotency_key) if idempotency_key is not None else entry_id
    fp = fingerprint("adjust", account_id, credit_type, amount, category, why, meta)

    def build(ct: str) -> Eval:
        return Eval.of(
            ADJUST,
            bucket,
            keys={
                "wallet": keys.wallet(account_id, ct),
                "idempotency": keys.idempotency(account_id, idem),
                "journal": keys.journal(bucket),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "idempotency_ttl_s": str(env.idempotency_ttl_s),
                "entry_id": entry_id,
                "grant_id": entry_id,
                "account_id": account_id,
                "credit_type": ct,
                "amount": str(amount),
                "category": category,
                "fingerprint": fp,
                "idempotency_key": idem,
                "reason": why,
                "metadata": meta,
            },
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "adjustment", subject="adjust")
        _same_change(stored, credit_type, amount, "adjust")
        balance = stored.balance_after
        return ADJUST.reply_of(
            Code.REPLAYED,
            entry_id=stored.id,
            amount=stored.amount,
            balance=balance,
            available=balance,
            held=0,
        )

    reply, _ = yield from _with_loading(
        env, ADJUST, build, account_id, None, credit_type, "adjust", idem=idem, from_sql=from_sql
    )
    return AdjustResult(
        id=reply.text("entry_id"),
        amount=reply.int("amount"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        replayed=reply.replayed,
    )


def clawback(
    env: Env,
    account_id: str,
    credit_type: str,
    total: int,
    *,
    reference_id: str,
    known_total: int = 0,
    grant_id: str | None = None,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Op[ClawbackResult]:
    """Takes back credits until `total` have been taken for `reference_id` (a running total:
    only the difference is taken, so a repeated or stale call takes nothing). The purchase's
    own grant goes first; what the wallet cannot cover becomes debt."""
    account_id = validate.account_id(account_id)
    credit_type = validate.credit_type(credit_type)
    total = validate.credits("total", total)
    known_total = validate.credits("known_total", known_total)
    ref = validate.text("reference_id", reference_id, bounds.REFERENCE_LEN_MAX, required=True)
    gid = "" if grant_id is None else validate.entity_id("grant_id", grant_id)
    why = validate.text("reason", reason, bounds.DESCRIPTION_LEN_MAX)
    meta = validate.metadata(metadata)
    keys = env.keys
    bucket = keys.bucket(account_id)
    entry_id = new_id(bucket)

    def build(ct: str) -> Eval:
        return Eval.of(
            CLAWBACK,
            bucket,
            keys={
                "wallet": keys.wallet(account_id, ct),
                "clawed": keys.clawed(account_id, ref),
                "journal": keys.journal(bucket),
                "events": keys.events(bucket),
            },
            args={
                "now_ms": env.now_arg(),
                "entry_id": entry_id,
                "account_id": account_id,
                "credit_type": ct,
                "target": str(total),
                "known": str(known_total),
                "grant_id": gid,
                "reference_id": ref,
                "reason": why,
                "metadata": meta,
            },
        )

    reply, _ = yield from _with_loading(
        env, CLAWBACK, build, account_id, None, credit_type, "clawback"
    )
    return ClawbackResult(
        id=reply.text("entry_id") or None,
        amount=reply.int("amount"),
        total=reply.int("total"),
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
    )


def balance(env: Env, account_id: str, credit_types: list[str] | None = None) -> Op[AccountBalance]:
    """Balances of one account's wallets (default: every credit type the catalog uses and the
    durable store knows for the account); missing wallets are loaded first. A read never
    creates an account: one the durable store does not know reads as empty wallets."""
    account_id = validate.account_id(account_id)
    if credit_types is None:
        known = yield LoadAccountTypes(account_id)
        credit_types = list(known) + (yield from catalog_credit_types(env, account_id))
    types = sorted({validate.credit_type(ct) for ct in credit_types})
    keys = env.keys
    bucket = keys.bucket(account_id)
    unknown: set[str] = set()
    for _ in range(bounds.HYDRATE_ATTEMPTS_MAX + 1):
        loaded = [ct for ct in types if ct not in unknown]
        replies = []
        if loaded:
            replies = yield Eval.of(
                BALANCE,
                bucket,
                keys={"wallets": [{"wallet": keys.wallet(account_id, ct)} for ct in loaded]},
                args={"now_ms": str(env.clock_ms())},
            )
        found = dict(zip(loaded, replies, strict=True))
        missing = [ct for ct, r in found.items() if _code(r) == Code.NOT_LOADED]
        if not missing:
            return AccountBalance(
                account_id,
                tuple(
                    WalletBalance(ct, 0, 0, 0, 0, 0, ())
                    if ct in unknown
                    else _wallet_balance(ct, found[ct])
                    for ct in types
                ),
            )
        for ct in missing:
            if not (yield from _hydrate(env, account_id, ct, create=False)):
                unknown.add(ct)
    raise ScriptContractError(f"balance {account_id}: wallets still not loaded")


def _wallet_balance(credit_type: str, r: list[Any]) -> WalletBalance:
    raise_for_reply(r, "balance", credit_type)
    reply = BALANCE.read(r)
    flat = reply.raw("grants")
    width = len(BALANCE_GRANT)
    grants = []
    for start in range(0, len(flat), width):
        g = dict(zip(BALANCE_GRANT, flat[start : start + width], strict=True))
        grants.append(
            GrantInfo(
                id=as_text(g["grant_id"]),
                remaining=int(g["remaining"]),
                priority=int(g["priority"]),
                expires_at_ms=int(g["expires_ms"]),
                category=wire.CATEGORY_NAMES[as_text(g["category"])],
            )
        )
    return WalletBalance(
        credit_type=credit_type,
        balance=reply.int("balance"),
        available=reply.int("available"),
        held=reply.int("held"),
        debt=reply.int("debt"),
        overdraft_limit=reply.int("overdraft_limit"),
        grants=tuple(grants),
    )


def set_tools(env: Env, tools: list[Tool], *, replace: bool = False) -> Op[None]:
    """Writes tools into every bucket's catalog replica before returning (SPEC §5)."""
    for t in tools:
        validate.tool(t.name)
        validate.credits("cost", t.cost)
        validate.credit_type(t.credit_type)
    for ev in catalog_evals(env.keys, tools, "replace" if replace else "merge"):
        reply = yield ev
        raise_for_reply(reply, "catalog", "")
    for t in tools:
        env.tool_credit_types[t.name] = t.credit_type


def set_account(
    env: Env,
    account_id: str,
    *,
    overdraft_limit: int,
    suspended: bool,
    rate_limits: Mapping[str, str],
) -> Op[int]:
    """Puts an account's overdraft limit, status and own rate limits ({tool or "*": "N/unit"},
    meter.rate_limits) in force on every wallet it has in Redis (each credit type the durable
    store or the catalog knows for it) -> wallets updated. The durable store must hold them
    first: a wallet loaded later hydrates them from it."""
    account_id = validate.account_id(account_id)
    validate.integer("overdraft_limit", overdraft_limit, 0, bounds.OVERDRAFT_LIMIT_MAX)
    rates = overrides_replica(rate_limits)
    known = yield LoadAccountTypes(account_id)
    types = sorted(set(known) | set((yield from catalog_credit_types(env, account_id))))
    keys = env.keys
    reply = yield Eval.of(
        ACCOUNT_SET,
        keys.bucket(account_id),
        keys={
            "account": keys.account(account_id),
            "wallets": [{"wallet": keys.wallet(account_id, ct)} for ct in types],
        },
        args={
            "account_id": account_id,
            "overdraft_limit": str(overdraft_limit),
            "status": "suspended" if suspended else "active",
            "rate_limits": rates,
        },
    )
    raise_for_reply(reply, f"account {account_id}", "")
    return ACCOUNT_SET.read(reply).int("wallets")


def set_threshold(
    env: Env, account_id: str, credit_type: str, kind: str, threshold: int | None
) -> Op[bool]:
    """Puts a wallet's alert threshold (None: none) in force for its next change -> whether
    Redis had the wallet loaded. The durable store must hold it first (hydrate reads it)."""
    account_id = validate.account_id(account_id)
    validate.credit_type(credit_type)
    if kind not in wire.THRESHOLD_FIELDS:
        raise InvalidArgument("kind", f"must be one of {', '.join(wire.THRESHOLD_FIELDS)}")
    if threshold is not None:
        validate.integer("threshold", threshold, 1, bounds.CREDITS_MAX)
    keys = env.keys
    reply = yield Eval.of(
        THRESHOLD_SET,
        keys.bucket(account_id),
        keys={"account": keys.account(account_id), "wallet": keys.wallet(account_id, credit_type)},
        args={
            "account_id": account_id,
            "credit_type": credit_type,
            "kind": kind,
            "threshold": _threshold_arg(threshold),
        },
    )
    raise_for_reply(reply, f"threshold {account_id}/{credit_type}", credit_type)
    return THRESHOLD_SET.read(reply).int("written") == 1


def catalog_credit_types(env: Env, account_id: str) -> Op[list[str]]:
    """Credit types the tools of the account's bucket replica use (restoring it if missing)."""
    bucket = env.keys.bucket(account_id)
    for _ in range(2):
        raw = yield Command(("HGETALL", env.keys.catalog(bucket)))
        if raw:
            return sorted(
                {
                    wire.catalog_credit_type(as_text(v))
                    for k, v in raw.items()
                    if as_text(k) != wire.CATALOG_LOADED_FIELD
                }
            )
        yield from _restore_catalog(env)
    return []


def expire_wallet(env: Env, bucket: int, account_id: str, credit_type: str) -> Op[ExpireResult]:
    keys = env.keys
    reply = yield Eval.of(
        EXPIRE,
        bucket,
        keys={
            "wallet": keys.wallet(account_id, credit_type),
            "journal": keys.journal(bucket),
            "due": keys.due(bucket),
            "events": keys.events(bucket),
        },
        args={
            "now_ms": env.now_arg(),
            "account_id": account_id,
            "credit_type": credit_type,
            "due_member": due_member(account_id, credit_type),
        },
    )
    raise_for_reply(reply, "expire", credit_type)
    done = EXPIRE.read(reply)
    return ExpireResult(done.int("grants_expired"), done.int("holds_expired"))
