"""Rate limits of credit-consuming calls: "N/second|minute|hour" per (account, tool), the
catalog's `rate_limit` (SPEC §12), and an account's own limits that beat it (per tool, or
ALL_TOOLS). Enforced by GCRA inside the charge script (lua/includes/rate_limit.lua); this
module reads the text and writes the forms the scripts read.

An account's own limit replaces the catalog's for that account, higher or lower (Unkey's
per-identifier override); one for a tool beats one for ALL_TOOLS. "0/minute" refuses every
call (Unkey's override of limit 0), its 429 saying to ask again in a minute. There is no
"unlimited": removing the override (null) falls back to the catalog's limit, and a tool
without one in the catalog has none."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from meter import bounds, validate, wire
from meter.errors import InvalidArgument

PERIOD_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000}
_TEXT_RE = re.compile(r"^([1-9][0-9]{0,9})/(second|minute|hour)$")
_OVERRIDE_RE = re.compile(r"^(0|[1-9][0-9]{0,9})/(second|minute|hour)$")
ALL_TOOLS = "*"  # an account's own limit for each tool it calls (a tool's own beats it)


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


def parse(text: str, *, field: str = "rate_limit", zero_blocks: bool = False) -> RateLimit:
    """ "60/minute" -> RateLimit(60, 60000); anything else is InvalidArgument. zero_blocks: an
    account's own limit, which may be 0 (every call refused)."""
    pattern = _OVERRIDE_RE if zero_blocks else _TEXT_RE
    m = pattern.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        n = "N (0 blocks)" if zero_blocks else "N"
        raise InvalidArgument(field, f'must be "{n}/second", "N/minute" or "N/hour"')
    count = int(m.group(1))
    if count > bounds.RATE_LIMIT_COUNT_MAX:
        raise InvalidArgument(field, f"at most {bounds.RATE_LIMIT_COUNT_MAX} per period")
    return RateLimit(count, PERIOD_MS[m.group(2)])


def check_overrides(overrides: Mapping[str, str]) -> dict[str, str]:
    """An account's own limits {tool or ALL_TOOLS: "N/unit"}, checked -> the same dict."""
    if len(overrides) > bounds.RATE_LIMIT_OVERRIDES_MAX:
        raise InvalidArgument(
            "rate_limits", f"at most {bounds.RATE_LIMIT_OVERRIDES_MAX} tools per account"
        )
    for tool, text in overrides.items():
        if tool != ALL_TOOLS:
            validate.tool(tool)
        parse(text, field=f"rate_limits.{tool}", zero_blocks=True)
    return dict(overrides)


def overrides_replica(overrides: Mapping[str, str]) -> str:
    """ARGV rate_limits of account_set and hydrate: "TOOL:count:period_ms;..." ("" none)."""
    items = []
    for tool, text in sorted(check_overrides(overrides).items()):
        limit = parse(text, zero_blocks=True)
        items.append(f"{tool}{wire.FIELD_SEP}{limit.count}{wire.FIELD_SEP}{limit.period_ms}")
    return wire.PART_SEP.join(items)


def replica_arg(text: str) -> str:
    """A tool's rate_limit ("" = none) as catalog_set takes it ("" or "<count>/<period_ms>")."""
    return parse(text).replica if text else ""
