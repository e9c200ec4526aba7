"""Sans-IO core of every meter operation: validate, build the script call, parse the reply.

Each operation is a generator that yields requests (`Eval`, `Command`, `LoadWallet`,
`LoadCatalog`) and receives their answers; `Meter` and `AsyncMeter` are thin drivers that
perform the I/O. So the logic — including "not loaded -> hydrate -> retry" — exists once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from meter import bounds, validate
from meter.errors import (
    ChargeNotFound,
    Code,
    HoldNotActive,
    HoldNotFound,
    IdempotencyConflict,
    InvalidArgument,
    ScriptContractError,
    raise_for_reply,
)
from meter.ids import bucket_of, new_id
from meter.keys import Keys, due_member
from meter.models import (
    AccountBalance,
    AdjustResult,
    ChargeRecord,
    ChargeResult,
    ClawbackResult,
    ExpireResult,
    ExtendResult,
    GrantInfo,
    GrantPart,
    GrantResult,
    HoldResult,
    RefundResult,
    ReleaseResult,
    SettleResult,
    StoredResult,
    Tool,
    WalletBalance,
    WalletSnapshot,
)
from meter.times import now_ms

R = TypeVar("R")
DEFAULT_CREDIT_TYPE = "credits"  # first guess for a tool not seen yet; corrected by the script
CATEGORY_CODES = {"paid": "p", "promotional": "r"}
CATEGORY_NAMES = {v: k for k, v in CATEGORY_CODES.items()}


@dataclass(slots=True)
class Eval:
    """EVALSHA of a registered script; `bucket` lets the async client batch charges."""

    script: str
    keys: list[str]
    args: list[str]
    bucket: int


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


def _parts(text: object) -> tuple[GrantPart, ...]:
    raw = as_text(text)
    if not raw:
        return ()
    out = []
    for item in raw.split(";"):
        gid, delta, after = item.split(":")
        out.append(GrantPart(gid, int(delta), int(after)))
    return tuple(out)


def _code(reply: list[Any]) -> int:
    return int(reply[0])


# --- loading: the "not loaded" answers -------------------------------------------------


def hydrate_eval(keys: Keys, account_id: str, credit_type: str, snap: WalletSnapshot) -> Eval:
    bucket = keys.bucket(account_id)
    assert len(snap.grants) <= bounds.GRANTS_PER_WALLET_MAX, "loader returned too many grants"
    args = [
        account_id,
        credit_type,
        str(snap.overdraft_limit),
        str(snap.debt),
        str(len(snap.grants)),
    ]
    for g in snap.grants:
        args += [g.id, str(g.remaining), str(g.priority), str(g.expires_at_ms), g.category]
    args.append(str(len(snap.holds)))
    for h in snap.holds:
        args += [h.id, str(h.amount), str(h.expires_at_ms), h.tool]
    args.append(due_member(account_id, credit_type))
    hold_keys = [keys.hold(bucket, h.id) for h in snap.holds]
    return Eval(
        "hydrate",
        [keys.wallet(account_id, credit_type), keys.due(bucket), *hold_keys],
        args,
        bucket,
    )


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
            Eval(
                "idem_restore",
                [keys.idempotency(account_id, key) for key, _ in chunk],
                [str(now), *(str(expires_ms) for _, expires_ms in chunk)],
                bucket,
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
        written += int(reply[1])
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
    args = [mode]
    for t in tools:
        args += [t.name, str(t.cost), t.credit_type, "1" if t.active else "0"]
    return [Eval("catalog_set", [keys.catalog(b)], args, b) for b in keys.all_buckets()]


def _restore_catalog(env: Env) -> Op[None]:
    tools = yield LoadCatalog()
    for ev in catalog_evals(env.keys, tools, "replace"):
        reply = yield ev
        raise_for_reply(reply, "catalog restore", "")


def _with_loading(
    env: Env,
    build: Callable[[str], Eval],
    account_id: str,
    tool: str | None,
    credit_type: str | None,
    subject: str,
    *,
    idem: str = "",
    from_sql: FromSql | None = None,
) -> Op[tuple[list[Any], str]]:
    """Runs a wallet script; hydrates, restores the catalog or learns a tool's credit type
    when the script asks, then retries. Returns the final reply and the credit type used.

    A key that ran before Redis lost its data is answered from SQL: `from_sql` turns what
    SQL kept into the reply the script would have replayed."""
    for _ in range(bounds.HYDRATE_ATTEMPTS_MAX + 1):
        ct = credit_type or env.tool_credit_types.get(tool or "", DEFAULT_CREDIT_TYPE)
        ev = build(ct)
        reply = yield ev
        if ev.script == "charge":
            reply = reply[0]
        code = _code(reply)
        if code == Code.IDEMPOTENCY_IN_SQL:
            assert from_sql is not None, f"{subject}: no idempotency record to answer from SQL"
            stored = yield LoadStoredResult(account_id, idem)
            if stored is None:
                raise ScriptContractError(f"{subject}: key {idem!r} marked as in SQL, not found")
            return from_sql(stored), stored.credit_type
        if code == Code.NOT_LOADED:
            yield from _hydrate(env, account_id, ct)
        elif code == Code.CATALOG_NOT_LOADED:
            yield from _restore_catalog(env)
        elif code == Code.CREDIT_TYPE_MISMATCH:
            assert tool is not None
            env.tool_credit_types[tool] = as_text(reply[1])
        else:
            raise_for_reply(reply, subject, ct)
            return reply, ct
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
        return Eval(
            "charge",
            [
                keys.catalog(bucket),
                keys.journal(bucket),
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.charge(bucket, entry_id),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                str(env.idempotency_ttl_s),
                entry_id,
                account_id,
                ct,
                tool,
                str(quantity),
                fp,
                idem,
                desc,
                meta,
            ],
            bucket,
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "charge", subject=f"charge {tool}")
        if (stored.tool, stored.quantity) != (tool, quantity):
            raise IdempotencyConflict(
                f"idempotency key reused with other parameters (charge {tool})"
            )
        balance = stored.balance_after
        return [Code.REPLAYED, stored.id, -stored.amount, balance, balance, 0, stored.breakdown]

    reply, ct = yield from _with_loading(
        env, build, account_id, tool, None, f"charge {tool}", idem=idem, from_sql=from_sql
    )
    return ChargeResult(
        id=as_text(reply[1]),
        account_id=account_id,
        tool=tool,
        credit_type=ct,
        amount=int(reply[2]),
        balance=int(reply[3]),
        available=int(reply[4]),
        held=int(reply[5]),
        breakdown=_parts(reply[6]),
        replayed=_code(reply) == Code.REPLAYED,
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
        return Eval(
            "hold",
            [
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.hold(bucket, hold_id),
                keys.catalog(bucket),
                keys.journal(bucket),
                keys.due(bucket),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                str(env.idempotency_ttl_s),
                hold_id,
                account_id,
                ct,
                tool,
                str(quantity),
                fixed,
                str(ttl_s),
                fp,
                idem,
                due_member(account_id, ct),
            ],
            bucket,
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "hold", subject=f"hold {tool}")
        if stored.tool != tool:
            raise IdempotencyConflict(f"idempotency key reused with other parameters (hold {tool})")
        held, balance = stored.amount, stored.balance_after
        return [Code.REPLAYED, stored.id, held, stored.expires_at_ms, balance, balance - held, held]

    reply, ct = yield from _with_loading(
        env, build, account_id, tool, None, f"hold {tool}", idem=idem, from_sql=from_sql
    )
    return HoldResult(
        id=as_text(reply[1]),
        account_id=account_id,
        tool=tool,
        credit_type=ct,
        amount=int(reply[2]),
        expires_at_ms=int(reply[3]),
        balance=int(reply[4]),
        available=int(reply[5]),
        held=int(reply[6]),
        replayed=_code(reply) == Code.REPLAYED,
    )


def _record_owner(
    env: Env, kind: str, record_id: str, owner: tuple[str, str] | None = None
) -> Op[tuple[int, str, str]]:
    """(bucket, account_id, credit_type) of a hold or charge: as the caller knows it, or read
    from its Redis record."""
    record_id = validate.entity_id(f"{kind}_id", record_id)
    bucket = bucket_of(record_id)
    if bucket >= env.keys.buckets:
        raise InvalidArgument(f"{kind}_id", "not an id of this deployment")
    if owner is not None:
        return bucket, owner[0], owner[1]
    if kind == "hold":
        key = env.keys.hold(bucket, record_id)
        raw = yield Command(("HMGET", key, "a", "t"))
        if raw[0] is None:
            # Redis lost the hold with its wallet: loading the wallet restores the records
            # of its active holds (a hold no longer active stays not found).
            owner_known = yield LoadHoldOwner(record_id)
            if owner_known is None:
                raise HoldNotFound(record_id)
            yield from _hydrate(env, owner_known[0], owner_known[1])
            raw = yield Command(("HMGET", key, "a", "t"))
            if raw[0] is None:
                raise HoldNotFound(record_id)
        return bucket, as_text(raw[0]), as_text(raw[1])
    key = env.keys.charge(bucket, record_id)
    raw = yield Command(("GET", key))
    if raw is None:
        # Redis forgot the charge (its record lives 25 h, or Redis lost data): the durable
        # store has it. SET NX: a concurrent restore or refund's newer record wins.
        rec = yield LoadCharge(record_id)
        if rec is None:
            raise ChargeNotFound(record_id)
        value = charge_record_value(rec)
        yield Command(("SET", key, value, "NX", "EX", str(bounds.CHARGE_RECORD_TTL_S)))
        raw = yield Command(("GET", key))
        if raw is None:
            raise ChargeNotFound(record_id)
    fields = as_text(raw).split("\x1f")
    return bucket, fields[0], fields[1]


def charge_record_value(rec: ChargeRecord) -> str:
    """The Redis charge record (see lua/includes/charge_record.lua) of a loaded charge."""
    parts = ";".join(
        f"{p.grant_id}:{p.refundable}:{p.priority}:{p.expires_at_ms}:{p.category}"
        for p in rec.parts
    )
    return "\x1f".join(
        [rec.account_id, rec.credit_type, rec.tool, str(rec.charged), str(rec.refunded), parts]
    )


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
    bucket, account_id, ct = yield from _record_owner(env, "hold", hold_id, owner)
    keys = env.keys
    entry_id = new_id(bucket)
    idem = idem_given or entry_id
    fp = fingerprint("settle", hold_id, wanted, desc, meta)

    def build(ct: str) -> Eval:
        return Eval(
            "settle",
            [
                keys.hold(bucket, hold_id),
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.journal(bucket),
                keys.charge(bucket, entry_id),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                str(env.idempotency_ttl_s),
                hold_id,
                entry_id,
                account_id,
                ct,
                wanted,
                fp,
                idem,
                desc,
                meta,
            ],
            bucket,
        )

    reply, _ = yield from _with_loading(
        env, build, account_id, None, ct, hold_id, idem=idem, from_sql=_hold_done(hold_id)
    )
    return SettleResult(
        entry_id=as_text(reply[1]),
        hold_id=hold_id,
        charged=int(reply[2]),
        released=int(reply[3]),
        balance=int(reply[4]),
        available=int(reply[5]),
        held=int(reply[6]),
        replayed=_code(reply) == Code.REPLAYED,
    )


def release(
    env: Env,
    hold_id: str,
    *,
    idempotency_key: str | None = None,
    owner: tuple[str, str] | None = None,
) -> Op[ReleaseResult]:
    idem_given = None if idempotency_key is None else validate.idempotency_key(idempotency_key)
    bucket, account_id, ct = yield from _record_owner(env, "hold", hold_id, owner)
    keys = env.keys
    idem = idem_given or new_id(bucket)
    fp = fingerprint("release", hold_id)

    def build(ct: str) -> Eval:
        return Eval(
            "release",
            [
                keys.hold(bucket, hold_id),
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.journal(bucket),
                keys.events(bucket),
            ],
            [env.now_arg(), str(env.idempotency_ttl_s), hold_id, account_id, ct, fp, idem],
            bucket,
        )

    reply, _ = yield from _with_loading(
        env, build, account_id, None, ct, hold_id, idem=idem, from_sql=_hold_done(hold_id)
    )
    return ReleaseResult(
        hold_id=hold_id,
        released=int(reply[1]),
        balance=int(reply[2]),
        available=int(reply[3]),
        held=int(reply[4]),
        replayed=_code(reply) == Code.REPLAYED,
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
    bucket, account_id, ct = yield from _record_owner(env, "hold", hold_id, owner)
    keys = env.keys
    idem = idem_given or new_id(bucket)
    fp = fingerprint("extend", hold_id, ttl_s)

    def build(ct: str) -> Eval:
        return Eval(
            "extend",
            [
                keys.hold(bucket, hold_id),
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.journal(bucket),
                keys.due(bucket),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                str(env.idempotency_ttl_s),
                hold_id,
                account_id,
                ct,
                str(ttl_s),
                fp,
                idem,
                due_member(account_id, ct),
            ],
            bucket,
        )

    reply, _ = yield from _with_loading(
        env, build, account_id, None, ct, hold_id, idem=idem, from_sql=_hold_done(hold_id)
    )
    return ExtendResult(
        hold_id=hold_id, expires_at_ms=int(reply[1]), replayed=_code(reply) == Code.REPLAYED
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
    bucket, account_id, ct = yield from _record_owner(env, "charge", charge_id)
    keys = env.keys
    entry_id = new_id(bucket)
    idem = idem_given or entry_id
    fp = fingerprint("refund", charge_id, wanted, why, meta)
    successor_paid, successor_promo = new_id(bucket), new_id(bucket)

    def build(ct: str) -> Eval:
        return Eval(
            "refund",
            [
                keys.charge(bucket, charge_id),
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.journal(bucket),
                keys.due(bucket),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                str(env.idempotency_ttl_s),
                entry_id,
                charge_id,
                account_id,
                ct,
                wanted,
                successor_paid,
                successor_promo,
                fp,
                idem,
                why,
                meta,
                due_member(account_id, ct),
            ],
            bucket,
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "refund", subject=f"refund of {charge_id}")
        if stored.reference_id != charge_id:
            raise IdempotencyConflict(f"idempotency key reused with other parameters ({charge_id})")
        balance = stored.balance_after
        return [
            Code.REPLAYED,
            stored.id,
            stored.amount,
            balance,
            balance,
            0,
            stored.refunded_total,
            stored.breakdown,
        ]

    reply, _ = yield from _with_loading(
        env, build, account_id, None, ct, charge_id, idem=idem, from_sql=from_sql
    )
    return RefundResult(
        id=as_text(reply[1]),
        charge_id=charge_id,
        amount=int(reply[2]),
        balance=int(reply[3]),
        available=int(reply[4]),
        held=int(reply[5]),
        refunded_total=int(reply[6]),
        breakdown=_parts(reply[7]),
        replayed=_code(reply) == Code.REPLAYED,
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
        return Eval(
            "grant",
            [
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.journal(bucket),
                keys.due(bucket),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                str(env.idempotency_ttl_s),
                entry_id,
                gid,
                account_id,
                ct,
                str(amount),
                category,
                str(priority),
                str(expires),
                source,
                ref,
                fp,
                idem,
                desc,
                meta,
                due_member(account_id, ct),
            ],
            bucket,
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "grant", subject="grant")
        _same_change(stored, credit_type, amount, "grant")
        balance = stored.balance_after
        new_grant = next(
            (p.grant_id for p in _parts(stored.breakdown) if p.grant_id != "debt"), gid
        )
        return [Code.REPLAYED, stored.id, new_grant, stored.amount, balance, balance, 0]

    reply, _ = yield from _with_loading(
        env, build, account_id, None, credit_type, "grant", idem=idem, from_sql=from_sql
    )
    return GrantResult(
        id=as_text(reply[1]),
        grant_id=as_text(reply[2]),
        amount=int(reply[3]),
        balance=int(reply[4]),
        available=int(reply[5]),
        held=int(reply[6]),
        replayed=_code(reply) == Code.REPLAYED,
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
        return Eval(
            "adjust",
            [
                keys.wallet(account_id, ct),
                keys.idempotency(account_id, idem),
                keys.journal(bucket),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                str(env.idempotency_ttl_s),
                entry_id,
                entry_id,
                account_id,
                ct,
                str(amount),
                category,
                fp,
                idem,
                why,
                meta,
            ],
            bucket,
        )

    def from_sql(stored: StoredResult) -> list[Any]:
        _expect(stored, "adjustment", subject="adjust")
        _same_change(stored, credit_type, amount, "adjust")
        balance = stored.balance_after
        return [Code.REPLAYED, stored.id, stored.amount, balance, balance, 0]

    reply, _ = yield from _with_loading(
        env, build, account_id, None, credit_type, "adjust", idem=idem, from_sql=from_sql
    )
    return AdjustResult(
        id=as_text(reply[1]),
        amount=int(reply[2]),
        balance=int(reply[3]),
        available=int(reply[4]),
        held=int(reply[5]),
        replayed=_code(reply) == Code.REPLAYED,
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
        return Eval(
            "clawback",
            [
                keys.wallet(account_id, ct),
                keys.clawed(account_id, ref),
                keys.journal(bucket),
                keys.events(bucket),
            ],
            [
                env.now_arg(),
                entry_id,
                account_id,
                ct,
                str(total),
                str(known_total),
                gid,
                ref,
                why,
                meta,
            ],
            bucket,
        )

    reply, _ = yield from _with_loading(env, build, account_id, None, credit_type, "clawback")
    return ClawbackResult(
        id=as_text(reply[1]) or None,
        amount=int(reply[2]),
        total=int(reply[3]),
        balance=int(reply[4]),
        available=int(reply[5]),
        held=int(reply[6]),
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
            replies = yield Eval(
                "balance",
                [keys.wallet(account_id, ct) for ct in loaded],
                [str(env.clock_ms())],
                bucket,
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
    flat = r[6]
    grants = tuple(
        GrantInfo(
            id=as_text(flat[i]),
            remaining=int(flat[i + 1]),
            priority=int(flat[i + 2]),
            expires_at_ms=int(flat[i + 3]),
            category=CATEGORY_NAMES[as_text(flat[i + 4])],
        )
        for i in range(0, len(flat), 5)
    )
    return WalletBalance(
        credit_type=credit_type,
        balance=int(r[1]),
        available=int(r[2]),
        held=int(r[3]),
        debt=int(r[4]),
        overdraft_limit=int(r[5]),
        grants=grants,
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


def catalog_credit_types(env: Env, account_id: str) -> Op[list[str]]:
    """Credit types the tools of the account's bucket replica use (restoring it if missing)."""
    bucket = env.keys.bucket(account_id)
    for _ in range(2):
        raw = yield Command(("HGETALL", env.keys.catalog(bucket)))
        if raw:
            return sorted({as_text(v).split("|")[1] for k, v in raw.items() if as_text(k) != "~"})
        yield from _restore_catalog(env)
    return []


def expire_wallet(env: Env, bucket: int, account_id: str, credit_type: str) -> Op[ExpireResult]:
    keys = env.keys
    reply = yield Eval(
        "expire",
        [
            keys.wallet(account_id, credit_type),
            keys.journal(bucket),
            keys.due(bucket),
            keys.events(bucket),
        ],
        [env.now_arg(), account_id, credit_type, due_member(account_id, credit_type)],
        bucket,
    )
    raise_for_reply(reply, "expire", credit_type)
    return ExpireResult(int(reply[1]), int(reply[2]))
