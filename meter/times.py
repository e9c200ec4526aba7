"""Time as the whole service writes it: integer milliseconds since the epoch, and RFC 3339
text in UTC (`2026-11-21T12:00:00Z`). One parser and one formatter, integer arithmetic only
(a float of milliseconds rounds a far date wrongly)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)
_INSTANT: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2})))?"
)
FORMS: Final = "an RFC 3339 time (2026-11-21T12:00:00Z)"


def now_ms() -> int:
    """Wall-clock ms: what scripts get as now_ms unless a test sets the clock (Redis TIME
    bounds how far it may be off: lua/includes/clock.lua)."""
    return int(time.time() * 1000)


def rfc3339(ms: int) -> str:
    """`2026-11-21T12:00:00Z`, with `.123` when the milliseconds are not zero."""
    text = (EPOCH + (ms - ms % 1000) * ONE_MS).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def parse_rfc3339_ms(text: str, *, date_ok: bool = False) -> int:
    """Milliseconds of an RFC 3339 time that carries its offset (digits below the
    millisecond dropped); with date_ok, a bare date means its midnight UTC. Raises
    ValueError saying what is wrong."""
    m = _INSTANT.fullmatch(text)
    if m is None or (m.group(4) is None and not date_ok):
        forms = FORMS + (" or a date (2026-11-21)" if date_ok else "")
        raise ValueError(f"{text!r} is not {forms}")
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
        raise ValueError(f"{text!r} is not a valid date or time") from exc
    return (at - EPOCH) // ONE_MS + int((fraction or "")[:3].ljust(3, "0"))
