"""The value formats Lua and Python exchange, each declared once: journal entry fields, the
breakdown and new-grant strings, the charge record, the wallet hash, the hold record, the
catalog replica and the category codes. The scripts write these (lua/includes/journal_add,
charge_record, wallet_load...); tests/meter/test_wire_declarations.py checks they use exactly
the names declared here.

Parsers raise WireFormatError with the reason: a value that does not parse never will.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from meter.models import ChargeRecord, GrantPart

CATEGORY_CODES = {"paid": "p", "promotional": "r"}
CATEGORY_NAMES = {code: name for name, code in CATEGORY_CODES.items()}
DEBT = "debt"  # the breakdown's pseudo-grant for a wallet's debt (remaining_after = -debt)
DEBT_CATEGORY = "d"  # a charge record part that went into debt

PART_SEP = ";"  # between the parts of a breakdown, a new-grant list, a charge record's parts
FIELD_SEP = ":"  # between the fields of one part
RECORD_SEP = "\x1f"  # between the fields of a charge record
VALUE_SEP = "|"  # between the fields of a wallet hash value and a catalog replica value


class WireFormatError(ValueError):
    pass


class JournalField(StrEnum):
    """Field names of a journal stream entry (lua/includes/journal_add.lua)."""

    ID = "id"
    KIND = "k"
    ACCOUNT = "a"
    CREDIT_TYPE = "t"
    AMOUNT = "m"
    BALANCE_AFTER = "b"
    TS_MS = "ts"
    TOOL = "tool"
    QUANTITY = "q"
    BREAKDOWN = "g"
    NEW_GRANTS = "ng"
    IDEMPOTENCY_KEY = "ik"
    DESCRIPTION = "desc"
    METADATA = "meta"
    SOURCE = "src"
    REFERENCE = "ref"
    HOLD = "hold"
    EXPIRES_AT_MS = "x"
    CHARGE_ENTRY = "e"  # hold_settle: the charge entry it made
    ALERTS = "al"  # thresholds the change crossed (lua/includes/crossings): parse_alerts
    CHARGE = "c"  # a charge's fixed fields in one value (CHARGE_PACKED_FIELDS): unpack_charge


# Written by journal_add itself for every entry; the others only when a script gives them.
JOURNAL_BASE_FIELDS = (
    JournalField.ID,
    JournalField.KIND,
    JournalField.ACCOUNT,
    JournalField.CREDIT_TYPE,
    JournalField.AMOUNT,
    JournalField.BALANCE_AFTER,
    JournalField.TS_MS,
)

# A charge's entry (lua/includes/journal_add journal_add_charge): these in one CHARGE value,
# RECORD_SEP between them, its kind "charge"; IDEMPOTENCY_KEY is absent when it is the id.
CHARGE_PACKED_FIELDS = (
    JournalField.ID,
    JournalField.ACCOUNT,
    JournalField.CREDIT_TYPE,
    JournalField.AMOUNT,
    JournalField.BALANCE_AFTER,
    JournalField.TS_MS,
    JournalField.TOOL,
    JournalField.QUANTITY,
    JournalField.BREAKDOWN,
)
CHARGE_KIND = "charge"


# The names unpack_charge reads, bound once: the flush unpacks every charge, and reading a
# member of the enum class goes through a descriptor each time.
_CHARGE, _KIND = JournalField.CHARGE.value, JournalField.KIND.value
_ID, _IDEMPOTENCY_KEY = JournalField.ID.value, JournalField.IDEMPOTENCY_KEY.value
_PACKED_NAMES = tuple(f.value for f in CHARGE_PACKED_FIELDS)


def unpack_charge(fields: dict[str, str]) -> dict[str, str]:
    """A journal entry's fields with a packed charge's CHARGE value spread into its named
    fields (the ones every other entry writes); entries of other shapes as they are."""
    packed = fields.get(_CHARGE)
    if packed is None:
        return fields
    values = packed.split(RECORD_SEP)
    if len(values) != len(_PACKED_NAMES):
        raise WireFormatError(f"bad packed charge {packed[:60]!r}")
    out = {k: v for k, v in fields.items() if k != _CHARGE}
    out.update(zip(_PACKED_NAMES, values, strict=True))
    out[_KIND] = CHARGE_KIND
    out.setdefault(_IDEMPOTENCY_KEY, out[_ID])
    return out


# The optional text fields (description, metadata, reference, idempotency key, source, tool,
# hold and charge ids): present when the request carried them, not by the entry's kind.
OPTIONAL_TEXT_FIELDS = frozenset(
    {
        JournalField.DESCRIPTION,
        JournalField.METADATA,
        JournalField.REFERENCE,
        JournalField.IDEMPOTENCY_KEY,
        JournalField.SOURCE,
        JournalField.TOOL,
        JournalField.HOLD,
        JournalField.CHARGE_ENTRY,
    }
)


class Alert(StrEnum):
    """The flags of a journal entry's ALERTS field: the thresholds its change crossed."""

    LOW = "l"  # available went from at or above the low threshold to below it
    DEPLETED = "d"  # available went from above 0 to 0 or below
    TOPUP = "t"  # available went from at or above the top-up threshold to below it


@dataclass(frozen=True, slots=True)
class Alerts:
    """A journal entry's ALERTS field: "<flags>|<available after>|<low threshold or ''>"."""

    flags: frozenset[Alert]
    available: int  # the wallet's available after the change
    low_threshold: int | None  # the one crossed, when LOW is among the flags


def parse_alerts(text: str | None) -> Alerts | None:
    if not text:
        return None
    bits = text.split(VALUE_SEP)
    if len(bits) != 3 or not bits[0] or set(bits[0]) - {a.value for a in Alert}:
        raise WireFormatError(f"bad alerts {text[:60]!r}")
    (available,) = _ints(bits[1:2], "alerts", text)
    low = _ints(bits[2:], "alerts", text)[0] if bits[2] else None
    flags = frozenset(Alert(c) for c in bits[0])
    if (Alert.LOW in flags) != (low is not None):
        raise WireFormatError(f"bad alerts {text[:60]!r}")
    return Alerts(flags, available, low)


class HoldField(StrEnum):
    """Field names of a hold record hash (lua/hold.lua, hydrate.lua, includes/hold_open)."""

    ACCOUNT = "a"
    CREDIT_TYPE = "t"
    TOOL = "tool"
    AMOUNT = "m"
    EXPIRES_AT_MS = "x"
    STATUS = "s"
    CHARGED = "c"
    CHARGE_ENTRY = "e"


class WalletField(StrEnum):
    """Fields of a wallet hash (lua/includes/wallet_load.lua); grants and holds are
    GRANT_PREFIX<id> and HOLD_PREFIX<id>."""

    OVERDRAFT = "o"
    DEBT = "d"
    SUSPENDED = "s"  # "1" while the account is suspended; absent when active
    RATE_LIMITS = "r"  # the account's own rate limits (meter.rate_limits.overrides_replica)
    LOW_THRESHOLD = "lt"  # the balance.low alert threshold (lua/includes/crossings)
    TOPUP_THRESHOLD = "tt"  # the auto top-up threshold


# A threshold's kind (SQL wallet_thresholds.kind) -> its wallet hash field.
THRESHOLD_FIELDS = {"low": WalletField.LOW_THRESHOLD, "topup": WalletField.TOPUP_THRESHOLD}

GRANT_PREFIX = "g:"  # value "remaining|priority|expires_ms|category code"
HOLD_PREFIX = "h:"  # value "amount|expires_ms"
# rt:<tool>: the tool's rate limit state, GCRA theoretical arrival time in ms ("%.3f"),
# written and dropped by the charge script only (lua/includes/rate_limit).
RATE_TAT_PREFIX = "rt:"
CATALOG_LOADED_FIELD = "~"  # marks a catalog replica as loaded (lua/catalog_set.lua)


@dataclass(frozen=True, slots=True)
class NewGrant:
    """A grant an entry created: "<id>:<category code>:<priority>:<expires_ms>"."""

    grant_id: str
    category: str  # paid | promotional
    priority: int
    expires_at_ms: int | None  # None: never expires


@dataclass(frozen=True, slots=True)
class WalletGrant:
    remaining: int
    priority: int
    expires_at_ms: int  # 0 = never expires
    category: str  # paid | promotional


@dataclass(frozen=True, slots=True)
class WalletHold:
    amount: int
    expires_at_ms: int


def _ints(bits: list[str], what: str, item: str) -> list[int]:
    try:
        return [int(b) for b in bits]
    except ValueError:
        raise WireFormatError(f"bad {what} {item[:60]!r}") from None


def _items(text: str | None) -> list[str]:
    return text.split(PART_SEP) if text else []


def format_breakdown(parts: Iterable[GrantPart]) -> str:
    """ "<grant id>:<delta>:<remaining after>;..." (lua/includes/wallet_math breakdown_str)."""
    return PART_SEP.join(
        f"{p.grant_id}{FIELD_SEP}{p.delta}{FIELD_SEP}{p.remaining_after}" for p in parts
    )


def parse_breakdown(text: str | None) -> tuple[GrantPart, ...]:
    out = []
    for item in _items(text):
        bits = item.split(FIELD_SEP)
        if len(bits) != 3 or not bits[0]:
            raise WireFormatError(f"bad breakdown part {item[:60]!r}")
        delta, after = _ints(bits[1:], "breakdown part", item)
        out.append(GrantPart(bits[0], delta, after))
    return tuple(out)


def parse_new_grants(text: str | None) -> tuple[NewGrant, ...]:
    out = []
    for item in _items(text):
        bits = item.split(FIELD_SEP)
        if len(bits) != 4 or not bits[0] or bits[1] not in CATEGORY_NAMES:
            raise WireFormatError(f"bad new grant {item[:60]!r}")
        prio, exp = _ints(bits[2:], "new grant", item)
        out.append(NewGrant(bits[0], CATEGORY_NAMES[bits[1]], prio, exp or None))
    return tuple(out)


def charge_record_value(rec: ChargeRecord) -> str:
    """A plain charge record, for refunds only (lua/includes/charge_record.lua):
    "account\\x1fcredit_type\\x1ftool\\x1fcharged\\x1frefunded\\x1fparts", parts
    "<grant id>:<refundable>:<priority>:<expires_ms>:<category code>;..." in burn order."""
    parts = PART_SEP.join(
        FIELD_SEP.join(
            [p.grant_id, str(p.refundable), str(p.priority), str(p.expires_at_ms), p.category]
        )
        for p in rec.parts
    )
    return RECORD_SEP.join(
        [rec.account_id, rec.credit_type, rec.tool, str(rec.charged), str(rec.refunded), parts]
    )


CHARGE_RECORD_FIELDS = 11  # a full record: the charge's reply and its refund parts
CHARGE_RECORD_FIELDS_PLAIN = 6  # a plain record: refund parts only (settle, SQL restore)
CHARGE_POINTER = "\x1d"  # starts a charge key's pointer to the record at its idempotency key


@dataclass(frozen=True, slots=True)
class ChargeOwner:
    """Whose a charge key's value is, and where the charge's record is."""

    account_id: str
    credit_type: str
    idempotency_key: str | None  # the record is at this idempotency key; None: here


def charge_record_owner(value: str) -> ChargeOwner:
    """The owner of the value at a charge key (lua/includes/charge_record.lua): a plain
    record "account\\x1fcredit_type\\x1f...", a full record "fingerprint\\x1fentry id\\x1f
    account\\x1fcredit_type\\x1f...", or a pointer "\\x1daccount\\x1fcredit_type\\x1fkey"."""
    if value.startswith(CHARGE_POINTER):
        fields = value[len(CHARGE_POINTER) :].split(RECORD_SEP)
        if len(fields) == 3 and all(fields):
            return ChargeOwner(fields[0], fields[1], fields[2])
    else:
        fields = value.split(RECORD_SEP)
        if len(fields) == CHARGE_RECORD_FIELDS_PLAIN:
            return ChargeOwner(fields[0], fields[1], None)
        if len(fields) == CHARGE_RECORD_FIELDS:
            return ChargeOwner(fields[2], fields[3], None)
    raise WireFormatError(f"bad charge record {value[:60]!r}")


def parse_grant_value(value: str) -> WalletGrant:
    bits = value.split(VALUE_SEP)
    if len(bits) != 4 or bits[3] not in CATEGORY_NAMES:
        raise WireFormatError(f"bad wallet grant {value[:60]!r}")
    rem, prio, exp = _ints(bits[:3], "wallet grant", value)
    return WalletGrant(rem, prio, exp, CATEGORY_NAMES[bits[3]])


def parse_hold_value(value: str) -> WalletHold:
    bits = value.split(VALUE_SEP)
    if len(bits) != 2:
        raise WireFormatError(f"bad wallet hold {value[:60]!r}")
    amount, exp = _ints(bits, "wallet hold", value)
    return WalletHold(amount, exp)


def catalog_credit_type(value: str) -> str:
    """The credit type of a catalog replica value "cost|credit_type|active", followed by
    "|count|period_ms" for a tool with a rate limit (lua/includes/rate_limit)."""
    bits = value.split(VALUE_SEP)
    if len(bits) not in (3, 5):
        raise WireFormatError(f"bad catalog value {value[:60]!r}")
    return bits[1]


def charge_part_category(category: str | None) -> str:
    """A charge record part's category code: a grant's, or DEBT_CATEGORY without a grant."""
    return DEBT_CATEGORY if category is None else CATEGORY_CODES[category]
