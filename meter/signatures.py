"""Each Lua script's signature, declared once: its KEYS and ARGV by name, in order, and the
names of its OK reply's fields. meter.ops builds every call and reads every reply by these
names; tests/meter/test_wire_declarations.py checks each script's header (`Input:` and
`Output:`) lists exactly them, so the Lua side and this one cannot drift apart.

A `Group` is a run of names repeated once per item (the charges of a batched charge call,
the tools of a catalog write...); a counted group is preceded by one ARGV with its count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meter.errors import Code


@dataclass(frozen=True)
class Group:
    name: str
    fields: tuple[str, ...]
    counted: bool = False  # one ARGV with the number of items comes first


Slot = str | Group
Values = Mapping[str, "str | Sequence[Mapping[str, str]]"]


def flat_names(slots: Sequence[Slot]) -> list[str]:
    """The names as a script header lists them: a group's count, then its fields once."""
    out: list[str] = []
    for slot in slots:
        if isinstance(slot, Group):
            out += [slot.name] if slot.counted else []
            out += list(slot.fields)
        else:
            out.append(slot)
    return out


def _positional(slots: Sequence[Slot], values: Values, script: str, kind: str) -> list[str]:
    # On every call of every script: checks by counts and lookups, no sets (names are
    # unique per declaration, so a count and every name found means the same names).
    assert len(values) == len(slots), f"{script} {kind}: given {sorted(values)}"
    out: list[str] = []
    for slot in slots:
        if isinstance(slot, str):
            value = values.get(slot)
            assert isinstance(value, str), (
                f"{script} {kind}: {slot} must be one value, got {value!r}"
            )
            out.append(value)
            continue
        items = values.get(slot.name)
        assert items is not None and not isinstance(items, str), (
            f"{script} {kind}: {slot.name} is a group"
        )
        if slot.counted:
            out.append(str(len(items)))
        fields = slot.fields
        for item in items:
            assert len(item) == len(fields), f"{script} {kind}: {slot.name} item {sorted(item)}"
            out += [item[f] for f in fields]
    return out


class Reply:
    """An OK or REPLAYED reply read by field name."""

    def __init__(
        self, script: str, fields: tuple[str, ...], optional: int, raw: Sequence[Any]
    ) -> None:
        given = len(raw) - 1
        assert given in (len(fields), len(fields) - optional), (
            f"{script} answered {len(raw)} values: {raw!r}"
        )
        self.code = int(raw[0])
        self._values = dict(zip(fields[:given], raw[1:], strict=True))

    def has(self, name: str) -> bool:
        """False for an optional field the script left out."""
        return name in self._values

    @property
    def replayed(self) -> bool:
        return self.code == Code.REPLAYED

    def raw(self, name: str) -> Any:
        return self._values[name]

    def int(self, name: str) -> int:
        return int(self._values[name])

    def text(self, name: str) -> str:
        value = self._values[name]
        return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Signature:
    script: str
    keys: tuple[Slot, ...]
    args: tuple[Slot, ...]
    reply: tuple[str, ...]  # the OK reply after its code
    # How many of the reply's last fields the script may leave out, all together.
    reply_optional: int = 0
    # One reply per item of its groups (a list of replies): the async client merges the
    # calls of one bucket into one by concatenating their groups.
    batched: bool = False

    def __post_init__(self) -> None:
        for slots in (self.keys, self.args):
            names = [s.name if isinstance(s, Group) else s for s in slots]
            assert len(set(names)) == len(names), f"{self.script}: a name declared twice"

    @property
    def key_head(self) -> int:
        """KEYS before the first group (shared by every call merged into one)."""
        return next(i for i, s in enumerate(self.keys) if isinstance(s, Group))

    @property
    def arg_head(self) -> int:
        return next(i for i, s in enumerate(self.args) if isinstance(s, Group))

    def key_list(self, **values: str | Sequence[Mapping[str, str]]) -> list[str]:
        return _positional(self.keys, values, self.script, "KEYS")

    def arg_list(self, **values: str | Sequence[Mapping[str, str]]) -> list[str]:
        return _positional(self.args, values, self.script, "ARGV")

    def read(self, raw: Sequence[Any]) -> Reply:
        return Reply(self.script, self.reply, self.reply_optional, raw)

    def reply_of(self, code: Code, **values: object) -> list[Any]:
        """A reply as the script would answer it (a replay answered from SQL)."""
        names = [n for n in self.reply if n in values]
        shapes = (list(self.reply), list(self.reply[: len(self.reply) - self.reply_optional]))
        assert names in shapes and len(names) == len(values), (
            f"{self.script} reply: {sorted(values)}"
        )
        return [int(code), *(values[name] for name in names)]


# The arguments every wallet-changing script with an idempotency key starts with.
_CLOCK = "now_ms"  # "<ms>" or "<ms>:<skew bound>" (lua/includes/clock)
_IDEM_TTL = "idempotency_ttl_s"

CHARGE = Signature(
    "charge",
    keys=(
        "catalog",
        "journal",
        Group("charges", ("wallet", "idempotency", "record", "events")),
    ),
    args=(
        _CLOCK,
        _IDEM_TTL,
        Group(
            "charges",
            (
                "entry_id",  # "": a dry run, check only (lua/includes/charge_dry)
                "account_id",
                "credit_type",
                "tool",
                "quantity",
                "fingerprint",
                "idempotency_key",
                "description",
                "metadata",
            ),
        ),
    ),
    reply=(
        "entry_id",
        "amount",
        "balance",
        "available",
        "held",
        "breakdown",
        # The rate limit in force after the charge, for RateLimit-* headers: left out when
        # the tool has none (and by a replay), so most charges read three fields fewer.
        "rate_limit",
        "rate_remaining",
        "rate_reset_ms",
    ),
    reply_optional=3,
    batched=True,
)
HOLD = Signature(
    "hold",
    keys=("wallet", "idempotency", "hold", "catalog", "journal", "due", "events"),
    args=(
        _CLOCK,
        _IDEM_TTL,
        "hold_id",
        "account_id",
        "credit_type",
        "tool",
        "quantity",
        "amount",
        "ttl_s",
        "fingerprint",
        "idempotency_key",
        "due_member",
    ),
    reply=("hold_id", "amount", "expires_ms", "balance", "available", "held"),
)
SETTLE = Signature(
    "settle",
    keys=("hold", "wallet", "idempotency", "journal", "record", "events"),
    args=(
        _CLOCK,
        _IDEM_TTL,
        "hold_id",
        "entry_id",
        "account_id",
        "credit_type",
        "amount",
        "fingerprint",
        "idempotency_key",
        "description",
        "metadata",
    ),
    reply=("entry_id", "charged", "released", "balance", "available", "held"),
)
RELEASE = Signature(
    "release",
    keys=("hold", "wallet", "idempotency", "journal", "events"),
    args=(
        _CLOCK,
        _IDEM_TTL,
        "hold_id",
        "account_id",
        "credit_type",
        "fingerprint",
        "idempotency_key",
    ),
    reply=("released", "balance", "available", "held"),
)
EXTEND = Signature(
    "extend",
    keys=("hold", "wallet", "idempotency", "journal", "due", "events"),
    args=(
        _CLOCK,
        _IDEM_TTL,
        "hold_id",
        "account_id",
        "credit_type",
        "ttl_s",
        "fingerprint",
        "idempotency_key",
        "due_member",
    ),
    reply=("expires_ms",),
)
REFUND = Signature(
    "refund",
    keys=("record", "wallet", "idempotency", "journal", "due", "events"),
    args=(
        _CLOCK,
        _IDEM_TTL,
        "entry_id",
        "charge_id",
        "account_id",
        "credit_type",
        "amount",
        "successor_paid",
        "successor_promotional",
        "fingerprint",
        "idempotency_key",
        "reason",
        "metadata",
        "due_member",
    ),
    reply=("entry_id", "amount", "balance", "available", "held", "refunded_total", "breakdown"),
)
GRANT = Signature(
    "grant",
    keys=("wallet", "idempotency", "journal", "due", "events"),
    args=(
        _CLOCK,
        _IDEM_TTL,
        "entry_id",
        "grant_id",
        "account_id",
        "credit_type",
        "amount",
        "category",
        "priority",
        "expires_ms",
        "source",
        "reference_id",
        "fingerprint",
        "idempotency_key",
        "description",
        "metadata",
        "due_member",
    ),
    reply=("entry_id", "grant_id", "amount", "balance", "available", "held"),
)
ADJUST = Signature(
    "adjust",
    keys=("wallet", "idempotency", "journal", "events"),
    args=(
        _CLOCK,
        _IDEM_TTL,
        "entry_id",
        "grant_id",
        "account_id",
        "credit_type",
        "amount",
        "category",
        "fingerprint",
        "idempotency_key",
        "reason",
        "metadata",
    ),
    reply=("entry_id", "amount", "balance", "available", "held"),
)
CLAWBACK = Signature(
    "clawback",
    keys=("wallet", "clawed", "journal", "events"),
    args=(
        _CLOCK,
        "entry_id",
        "account_id",
        "credit_type",
        "target",
        "known",
        "grant_id",
        "reference_id",
        "reason",
        "metadata",
    ),
    reply=("entry_id", "amount", "total", "balance", "available", "held"),
)
EXPIRE = Signature(
    "expire",
    keys=("wallet", "journal", "due", "events"),
    args=(_CLOCK, "account_id", "credit_type", "due_member"),
    reply=("grants_expired", "holds_expired"),
)
BALANCE = Signature(
    "balance",
    keys=(Group("wallets", ("wallet",)),),
    args=("now_ms",),
    reply=("balance", "available", "held", "debt", "overdraft_limit", "grants"),
)
# Each grant of a balance reply's `grants`, flattened in this order.
BALANCE_GRANT = ("grant_id", "remaining", "priority", "expires_ms", "category")
HYDRATE = Signature(
    "hydrate",
    keys=("wallet", "account", "due", Group("holds", ("hold",))),
    args=(
        "account_id",
        "credit_type",
        "overdraft_limit",
        "status",
        "rate_limits",
        "debt",
        Group(
            "grants",
            ("grant_id", "remaining", "priority", "expires_ms", "category"),
            counted=True,
        ),
        Group("holds", ("hold_id", "amount", "expires_ms", "tool"), counted=True),
        "due_member",
        "low_threshold",
        "topup_threshold",
    ),
    reply=("written",),
)
ACCOUNT_SET = Signature(
    "account_set",
    keys=("account", Group("wallets", ("wallet",))),
    args=("account_id", "overdraft_limit", "status", "rate_limits"),
    reply=("wallets",),
)
THRESHOLD_SET = Signature(
    "threshold_set",
    keys=("account", "wallet"),
    args=("account_id", "credit_type", "kind", "threshold"),
    reply=("written",),
)
IDEM_RESTORE = Signature(
    "idem_restore",
    keys=(Group("records", ("idempotency",)),),
    args=("now_ms", Group("records", ("expires_at_ms",))),
    reply=("written",),
)
CATALOG_SET = Signature(
    "catalog_set",
    keys=("catalog",),
    args=("mode", Group("tools", ("tool", "cost", "credit_type", "active", "rate_limit"))),
    reply=("written",),
)
FLUSH_ACK = Signature(
    "flush_ack",
    keys=("journal", "lock"),
    args=("group", "token", "lock_ttl_ms", "committed", Group("ids", ("stream_id",))),
    reply=("acked", "trimmed", "lock_held"),
)
CONSUMER_PRUNE = Signature(
    "consumer_prune",
    keys=("journal",),
    args=("group", "consumer"),
    reply=("deleted",),
)

ALL = {
    s.script: s
    for s in (
        CHARGE,
        HOLD,
        SETTLE,
        RELEASE,
        EXTEND,
        REFUND,
        GRANT,
        ADJUST,
        CLAWBACK,
        EXPIRE,
        BALANCE,
        HYDRATE,
        ACCOUNT_SET,
        THRESHOLD_SET,
        IDEM_RESTORE,
        CATALOG_SET,
        FLUSH_ACK,
        CONSUMER_PRUNE,
    )
}
