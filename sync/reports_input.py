"""What a user asks a report for: the time range and the grouping, checked before any SQL.

Part of sync.reports, which re-exports everything here; import it from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

DAY_MS: Final = 86_400_000  # reports bucket by UTC day: created_at_ms // DAY_MS
DEFAULT_SPAN_MS: Final = 30 * DAY_MS  # a month: the usual question, and a quick scan
REPORT_SPAN_MAX_MS: Final = 366 * DAY_MS  # a (leap) year bounds one scan and the series' rows
RANGE_MIN_MS: Final = 946_684_800_000  # 2000-01-01Z: nothing metered is older; earlier is a typo
RANGE_END_MS: Final = 253_402_300_800_000  # 10000-01-01Z: RFC 3339 years have four digits

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INSTANT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2})))?"
)
_FORMS = "an RFC 3339 time (2026-11-21T12:00:00Z) or a date (2026-11-21)"


class ReportError(ValueError):
    """What a user typed wrong (HTTP 422, CLI exit 2); `field` names the parameter:
    from, to, group_by or limit. str(error) is the message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Range:
    """Half-open: [from_ms, to_ms)."""

    from_ms: int
    to_ms: int

    def __post_init__(self) -> None:
        assert RANGE_MIN_MS <= self.from_ms < self.to_ms <= RANGE_END_MS, self
        assert self.to_ms - self.from_ms <= REPORT_SPAN_MAX_MS, self


def parse_range(from_text: str | None, to_text: str | None, now_ms: int) -> Range:
    """The range typed, each bound an RFC 3339 time (any offset) or a date (00:00 UTC);
    `to` defaults to now, `from` to DEFAULT_SPAN_MS before `to`."""
    to_ms = now_ms if to_text is None else _parse_instant("to", to_text)
    from_ms = to_ms - DEFAULT_SPAN_MS if from_text is None else _parse_instant("from", from_text)
    # A defaulted bound is blamed on the bound the user typed.
    field = "from" if from_text is not None else "to"
    if from_ms < RANGE_MIN_MS:
        raise ReportError(field, "the range starts before 2000-01-01")
    if from_ms >= to_ms:
        raise ReportError(field, "from must be before to")
    if to_ms - from_ms > REPORT_SPAN_MAX_MS:
        days = REPORT_SPAN_MAX_MS // DAY_MS
        raise ReportError(field, f"the range spans more than {days} days; ask for less")
    return Range(from_ms, to_ms)


def _parse_instant(field: str, text: str) -> int:
    m = _INSTANT.fullmatch(text)
    if m is None:
        raise ReportError(field, f"{field} {text!r} is not {_FORMS}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = m.groups()
    try:
        if hour is None:
            at = datetime(int(year), int(month), int(day), tzinfo=UTC)
        else:
            offset = timedelta(0)
            if not zulu:
                if int(off_h) > 23 or int(off_m) > 59:
                    raise ValueError("offset out of range")
                offset = timedelta(hours=int(off_h), minutes=int(off_m))
                offset = -offset if sign == "-" else offset
            hms = (int(hour), int(minute), int(second))
            at = datetime(int(year), int(month), int(day), *hms, tzinfo=timezone(offset))
    except ValueError as exc:
        raise ReportError(field, f"{field} {text!r} is not a valid date or time") from exc
    # Digits below the millisecond are dropped: times are whole milliseconds everywhere.
    at_ms = (at - EPOCH) // timedelta(milliseconds=1) + int((fraction or "")[:3].ljust(3, "0"))
    if not RANGE_MIN_MS <= at_ms < RANGE_END_MS:
        raise ReportError(field, f"{field} {text!r} is outside the years 2000 to 9999")
    return at_ms


def parse_group_by(
    text: str | None, allowed: tuple[str, ...], default: tuple[str, ...]
) -> tuple[str, ...]:
    """A comma list of names from `allowed`, kept in the order typed; None gives `default`."""
    if text is None:
        return default
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in allowed:
            choices = ", ".join(allowed)
            raise ReportError("group_by", f"cannot group by {name!r}; choose from {choices}")
    if len(set(names)) != len(names):
        raise ReportError("group_by", f"group_by {text!r} names a group twice")
    return names
