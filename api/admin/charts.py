"""Report rows shaped for the overview's charts: one label per UTC day of the range (days
without rows are zeros, not gaps). Amounts of different units never share a chart: one
chart per credit type (usage, liability) or per currency (revenue), its unit named."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.reports import Range, Report

DAY_MS = 86_400_000
LIABILITY_SERIES = "outstanding"  # the one series of a credit type's liability chart
REVENUE_SERIES = "net revenue"  # the one series of a currency's revenue chart


@dataclass
class Series:
    name: str
    values: list[int]


@dataclass
class Chart:
    labels: list[str]
    series: list[Series] = field(default_factory=list)
    unit: str = ""  # a credit type, or a currency code for amounts in its minor units

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def days_of(rng: Range) -> list[str]:
    """Every UTC day the half-open range touches, as 'YYYY-MM-DD'."""
    first = datetime.fromtimestamp(rng.from_ms // DAY_MS * DAY_MS / 1000, UTC).date()
    last = datetime.fromtimestamp((rng.to_ms - 1) // DAY_MS * DAY_MS / 1000, UTC).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def end_day(rng: Range) -> str:
    """The first UTC day at or after the range's end: a date form field for `to` (exclusive)
    that keeps the range's last, partial day in."""
    day_start_ms = -(-rng.to_ms // DAY_MS) * DAY_MS
    return datetime.fromtimestamp(day_start_ms / 1000, UTC).date().isoformat()


def _pivot(
    report: Report, days: list[str], unit_col: str, series_col: str | None, value_col: str
) -> dict[str, list[Series]]:
    """Rows (day, unit, [name,] value) -> per unit, one series per name (or one series named
    after the unit when there is no name column), a value per day (0 when absent)."""
    day_i = report.columns.index("day")
    unit_i = report.columns.index(unit_col)
    name_i = report.columns.index(series_col) if series_col else unit_i
    value_i = report.columns.index(value_col)
    position = {d: i for i, d in enumerate(days)}
    by_unit: dict[str, dict[str, list[int]]] = {}
    for row in report.rows:
        day, unit, name, value = row[day_i], row[unit_i], row[name_i], row[value_i]
        if day not in position:
            continue  # a report day outside the chart's axis cannot be drawn
        values = by_unit.setdefault(str(unit), {}).setdefault(str(name), [0] * len(days))
        values[position[str(day)]] += int(value or 0)
    return {
        unit: [Series(name, values) for name, values in sorted(by_name.items())]
        for unit, by_name in sorted(by_unit.items())
    }


def usage_charts(usage_by_day_tool_type: Report, rng: Range) -> list[Chart]:
    """Credits consumed (charges minus refunds) per day: one chart per credit type, a series
    per tool charging it (a tool charges one credit type, so it is in one chart only)."""
    days = days_of(rng)
    by_type = _pivot(usage_by_day_tool_type, days, "credit_type", "tool", "credits")
    return [Chart(days, series, unit=credit_type) for credit_type, series in by_type.items()]


def revenue_charts(revenue_by_day: Report, rng: Range) -> list[Chart]:
    """Net revenue per day, one chart per currency (amounts of two currencies never add)."""
    days = days_of(rng)
    by_currency = _pivot(revenue_by_day, days, "currency", None, "net_minor")
    return [
        Chart(days, [Series(REVENUE_SERIES, s.values) for s in series], unit=currency)
        for currency, series in by_currency.items()
    ]


def liability_charts(series: Report, rng: Range) -> list[Chart]:
    """Outstanding balance at the end of each day: one chart per credit type."""
    days = days_of(rng)
    by_type = _pivot(series, days, "credit_type", None, "balance")
    return [
        Chart(days, [Series(LIABILITY_SERIES, s.values) for s in rows], unit=credit_type)
        for credit_type, rows in by_type.items()
    ]
