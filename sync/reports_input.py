"""What a user asks a report for: the time range and the grouping, checked before any SQL.

Part of sync.reports, which re-exports everything here; import it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meter.times import parse_rfc3339_ms

DAY_MS: Final = 86_400_000  # reports bucket by UTC day: created_at_ms // DAY_MS
DEFAULT_SPAN_MS: Final = 30 * DAY_MS  # a month: the usual question, and a quick scan
REPORT_SPAN_MAX_MS: Final = 366 * DAY_MS  # a (leap) year bounds one scan and the series' rows
RANGE_MIN_MS: Final = 946_684_800_000  # 2000-01-01Z: nothing metered is older; earlier is a typo
RANGE_END_MS: Final = 253_402_300_800_000  # 10000-01-01Z: RFC 3339 years have four digits


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
    try:
        at_ms = parse_rfc3339_ms(text, date_ok=True)
    except ValueError as exc:
        raise ReportError(field, f"{field} {exc}") from exc
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
