"""Journal stream entries as typed values: parsing and checking, no I/O.

An entry that does not parse is malformed for good: the flush dead-letters it at once
rather than retrying something that can never succeed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from meter import bounds
from meter.models import GrantPart
from meter.wire import (
    RECORD_SEP,
    Alerts,
    NewGrant,
    WireFormatError,
    parse_alerts,
    parse_breakdown,
    parse_new_grants,
    unpack_charge,
)
from meter.wire import JournalField as F

LEDGER_KINDS = frozenset({"grant", "charge", "refund", "adjustment", "expire", "clawback"})
HOLD_KINDS = frozenset(
    {"hold_open", "hold_settle", "hold_release", "hold_expire", "hold_extend", "hold_reduce"}
)


# The field names parse reads, bound once: reading a member of the enum class goes through a
# descriptor (about a microsecond per entry each), and the flush parses every entry.
_ID, _KIND, _ACCOUNT, _CREDIT_TYPE = F.ID, F.KIND, F.ACCOUNT, F.CREDIT_TYPE
_AMOUNT, _BALANCE_AFTER, _TS_MS = F.AMOUNT, F.BALANCE_AFTER, F.TS_MS
_QUANTITY, _EXPIRES_AT_MS, _METADATA = F.QUANTITY, F.EXPIRES_AT_MS, F.METADATA
_BREAKDOWN, _NEW_GRANTS, _ALERTS = F.BREAKDOWN, F.NEW_GRANTS, F.ALERTS
_ID_LEN_MAX, _ACCOUNT_ID_LEN_MAX = bounds.ID_LEN_MAX, bounds.ACCOUNT_ID_LEN_MAX
_CREDIT_TYPE_LEN_MAX, _CREDITS_MAX = bounds.CREDIT_TYPE_LEN_MAX, bounds.CREDITS_MAX


class MalformedEntry(ValueError):
    pass


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
    parts: tuple[GrantPart, ...]
    new_grants: tuple[NewGrant, ...]
    alerts: Alerts | None = None  # thresholds its change crossed (lua/includes/crossings)

    @property
    def is_ledger(self) -> bool:
        return self.kind in LEDGER_KINDS

    @property
    def sort_id(self) -> str:
        return sortable(self.stream_id)

    def get(self, name: F) -> str | None:
        return self.fields.get(name) or None

    def int_field(self, name: F) -> int | None:
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


def raw_entry_id(fields: dict[str, str]) -> str | None:
    """A stream entry's id without parsing the rest: a packed charge's first value, or the
    ID field of any other entry (None: neither)."""
    packed = fields.get(F.CHARGE)
    if packed is not None:
        return packed.split(RECORD_SEP, 1)[0]
    return fields.get(F.ID)


def _text(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, str]:
    first = next(iter(raw), "")
    if isinstance(first, str):
        return raw  # type: ignore[return-value]  # read with decode_responses already
    return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]


def _int(fields: dict[str, str], name: F, low: int, high: int) -> int:
    raw = fields.get(name)
    if raw is None:
        raise MalformedEntry(f"field {name.value!r} missing")
    try:
        value = int(raw)
    except ValueError:
        raise MalformedEntry(f"field {name.value!r} is not an integer: {raw[:40]!r}") from None
    if not low <= value <= high:
        raise MalformedEntry(f"field {name.value!r} out of range: {value}")
    return value


def _text_field(fields: dict[str, str], name: F, len_max: int) -> str:
    value = fields.get(name)
    if not value or len(value) > len_max:
        raise MalformedEntry(f"field {name.value!r} missing or too long")
    return value


def parse(stream_id: str, raw: dict[bytes, bytes] | dict[str, str]) -> Entry:
    """One stream entry, checked; raises MalformedEntry with the reason. A charge's packed
    entry and the unpacked entries of earlier versions give the same Entry."""
    try:
        fields = unpack_charge(_text(raw))
    except WireFormatError as exc:
        raise MalformedEntry(str(exc)) from None
    kind = fields.get(_KIND, "")
    if kind not in LEDGER_KINDS and kind not in HOLD_KINDS:
        raise MalformedEntry(f"unknown kind {kind[:40]!r}")
    entry_id = _text_field(fields, _ID, _ID_LEN_MAX)
    account = _text_field(fields, _ACCOUNT, _ACCOUNT_ID_LEN_MAX)
    credit_type = _text_field(fields, _CREDIT_TYPE, _CREDIT_TYPE_LEN_MAX)
    amount = _int(fields, _AMOUNT, -_CREDITS_MAX, _CREDITS_MAX)
    balance_after = _int(fields, _BALANCE_AFTER, -_CREDITS_MAX, _CREDITS_MAX)
    ts_ms = _int(fields, _TS_MS, 0, _CREDITS_MAX)
    for name in (_QUANTITY, _EXPIRES_AT_MS):
        if fields.get(name):
            _int(fields, name, 0, _CREDITS_MAX)
    meta = fields.get(_METADATA)
    if meta:
        try:
            json.loads(meta)
        except ValueError:
            raise MalformedEntry(f"field {_METADATA.value!r} is not JSON") from None
    try:
        parts = parse_breakdown(fields.get(_BREAKDOWN))
        new_grants = parse_new_grants(fields.get(_NEW_GRANTS))
        alerts = parse_alerts(fields.get(_ALERTS))
    except WireFormatError as exc:
        raise MalformedEntry(str(exc)) from None
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
        new_grants=new_grants,
        alerts=alerts,
    )
