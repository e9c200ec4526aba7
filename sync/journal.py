"""Journal stream entries as typed values: parsing and checking, no I/O.

An entry that does not parse is malformed for good: the flush dead-letters it at once
rather than retrying something that can never succeed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from meter import bounds

LEDGER_KINDS = frozenset({"grant", "charge", "refund", "adjustment", "expire", "clawback"})
HOLD_KINDS = frozenset(
    {"hold_open", "hold_settle", "hold_release", "hold_expire", "hold_extend", "hold_reduce"}
)
CATEGORY_NAMES = {"p": "paid", "r": "promotional"}
DEBT = "debt"  # the breakdown's pseudo-grant for a wallet's debt


class MalformedEntry(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NewGrant:
    grant_id: str
    category: str
    priority: int
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True)
class Part:
    grant_id: str
    delta: int
    remaining_after: int


@dataclass(frozen=True, slots=True)
class Entry:
    stream_id: str  # Redis's own id, "ms-seq"
    id: str
    kind: str
    account_id: str
    credit_type: str
    amount: int
    balance_after: int
    ts_ms: int
    fields: dict[str, str]
    parts: tuple[Part, ...]
    new_grants: tuple[NewGrant, ...]

    @property
    def is_ledger(self) -> bool:
        return self.kind in LEDGER_KINDS

    @property
    def sort_id(self) -> str:
        return sortable(self.stream_id)

    def get(self, name: str) -> str | None:
        return self.fields.get(name) or None

    def int_field(self, name: str) -> int | None:
        v = self.fields.get(name)
        return None if v in (None, "") else int(v)


def sortable(stream_id: str) -> str:
    """A stream id as a string that sorts like the id ("ms-seq" does not: 9 > 10)."""
    ms, _, seq = stream_id.partition("-")
    return f"{int(ms):015d}-{int(seq or 0):010d}"


def unsortable(sort_id: str) -> str:
    ms, _, seq = sort_id.partition("-")
    return f"{int(ms)}-{int(seq)}"


def stream_ms(stream_id: str) -> int:
    return int(stream_id.partition("-")[0])


def _text(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, str]:
    first = next(iter(raw), "")
    if isinstance(first, str):
        return raw  # type: ignore[return-value]  # read with decode_responses already
    return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]


def _int(fields: dict[str, str], name: str, low: int, high: int) -> int:
    raw = fields.get(name)
    if raw is None:
        raise MalformedEntry(f"field {name!r} missing")
    try:
        value = int(raw)
    except ValueError:
        raise MalformedEntry(f"field {name!r} is not an integer: {raw[:40]!r}") from None
    if not low <= value <= high:
        raise MalformedEntry(f"field {name!r} out of range: {value}")
    return value


def _parts(text: str | None) -> tuple[Part, ...]:
    if not text:
        return ()
    out = []
    for item in text.split(";"):
        bits = item.split(":")
        if len(bits) != 3 or not bits[0]:
            raise MalformedEntry(f"bad breakdown part {item[:60]!r}")
        try:
            out.append(Part(bits[0], int(bits[1]), int(bits[2])))
        except ValueError:
            raise MalformedEntry(f"bad breakdown part {item[:60]!r}") from None
    return tuple(out)


def _new_grants(text: str | None) -> tuple[NewGrant, ...]:
    if not text:
        return ()
    out = []
    for item in text.split(";"):
        bits = item.split(":")
        if len(bits) != 4 or not bits[0] or bits[1] not in CATEGORY_NAMES:
            raise MalformedEntry(f"bad new grant {item[:60]!r}")
        try:
            prio, exp = int(bits[2]), int(bits[3])
        except ValueError:
            raise MalformedEntry(f"bad new grant {item[:60]!r}") from None
        out.append(NewGrant(bits[0], CATEGORY_NAMES[bits[1]], prio, exp or None))
    return tuple(out)


def parse(stream_id: str, raw: dict[bytes, bytes] | dict[str, str]) -> Entry:
    """One stream entry, checked; raises MalformedEntry with the reason."""
    fields = _text(raw)
    kind = fields.get("k", "")
    if kind not in LEDGER_KINDS and kind not in HOLD_KINDS:
        raise MalformedEntry(f"unknown kind {kind[:40]!r}")
    entry_id, account, credit_type = fields.get("id"), fields.get("a"), fields.get("t")
    if not entry_id or len(entry_id) > bounds.ID_LEN_MAX:
        raise MalformedEntry("field 'id' missing or too long")
    if not account or len(account) > bounds.ACCOUNT_ID_LEN_MAX:
        raise MalformedEntry("field 'a' missing or too long")
    if not credit_type or len(credit_type) > bounds.CREDIT_TYPE_LEN_MAX:
        raise MalformedEntry("field 't' missing or too long")
    amount = _int(fields, "m", -bounds.CREDITS_MAX, bounds.CREDITS_MAX)
    balance_after = _int(fields, "b", -bounds.CREDITS_MAX, bounds.CREDITS_MAX)
    ts_ms = _int(fields, "ts", 0, bounds.CREDITS_MAX)
    for name in ("q", "x"):
        if fields.get(name):
            _int(fields, name, 0, bounds.CREDITS_MAX)
    meta = fields.get("meta")
    if meta:
        try:
            json.loads(meta)
        except ValueError:
            raise MalformedEntry("field 'meta' is not JSON") from None
    parts = _parts(fields.get("g"))
    if kind in LEDGER_KINDS and parts and sum(p.delta for p in parts) != amount:
        raise MalformedEntry("breakdown does not add up to the amount")
    return Entry(
        stream_id=stream_id,
        id=entry_id,
        kind=kind,
        account_id=account,
        credit_type=credit_type,
        amount=amount,
        balance_after=balance_after,
        ts_ms=ts_ms,
        fields=fields,
        parts=parts,
        new_grants=_new_grants(fields.get("ng")),
    )
