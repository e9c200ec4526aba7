"""Rate limits of credit-consuming calls: "N/second|minute|hour" per (account, tool), the
catalog's `rate_limit` (SPEC §12). Enforced by GCRA inside the charge script
(lua/includes/rate_limit.lua); this module reads the text and writes the replica's form."""

from __future__ import annotations

import re
from dataclasses import dataclass

from meter import bounds
from meter.errors import InvalidArgument

PERIOD_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000}
_TEXT_RE = re.compile(r"^([1-9][0-9]{0,9})/(second|minute|hour)$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int  # calls allowed per period, all of them at once (burst) after a quiet period
    period_ms: int

    @property
    def text(self) -> str:
        unit = next(u for u, ms in PERIOD_MS.items() if ms == self.period_ms)
        return f"{self.count}/{unit}"

    @property
    def replica(self) -> str:
        """ARGV rate_limit of catalog_set: "<count>/<period_ms>"."""
        return f"{self.count}/{self.period_ms}"


def parse(text: str) -> RateLimit:
    """ "60/minute" -> RateLimit(60, 60000); anything else is InvalidArgument."""
    m = _TEXT_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InvalidArgument("rate_limit", 'must be "N/second", "N/minute" or "N/hour"')
    count = int(m.group(1))
    if count > bounds.RATE_LIMIT_COUNT_MAX:
        raise InvalidArgument("rate_limit", f"at most {bounds.RATE_LIMIT_COUNT_MAX} per period")
    return RateLimit(count, PERIOD_MS[m.group(2)])


def replica_arg(text: str) -> str:
    """A tool's rate_limit ("" = none) as catalog_set takes it ("" or "<count>/<period_ms>")."""
    return parse(text).replica if text else ""
