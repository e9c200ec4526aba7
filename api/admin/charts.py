"""Report rows shaped for the overview's charts: one label per UTC day of the range (days
without rows are zeros, not gaps) and one series per tool, currency or credit type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.reports import Range, Report

DAY_MS = 86_400_000


@dataclass
class Series:
    name: str
    values: list[int]


@dataclass
class Chart:
    labels: list[str]
    series: list[Series] = field(default_factory=list)
    unit: str = ""  # "credits", or a currency code for amounts in its minor units

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


def _pivot(report: Report, days: list[str], series_col: str, value_col: str) -> list[Series]:
    """Rows (day, name, value) -> one series per name, a value per day (0 when absent)."""
    day_i = report.columns.index("day")
    name_i = report.columns.index(series_col)
    value_i = report.columns.index(value_col)
    position = {d: i for i, d in enumerate(days)}
    by_name: dict[str, list[int]] = {}
    for row in report.rows:
        day, name, value = row[day_i], row[name_i], row[value_i]
        if day not in position:
            continue  # a report day outside the chart's axis cannot be drawn
        values = by_name.setdefault(str(name), [0] * len(days))
        values[position[str(day)]] += int(value or 0)
    return [Series(name, values) for name, values in sorted(by_name.items())]


def usage_chart(usage_by_day_tool: Report, rng: Range) -> Chart:
    """Credits consumed (charges minus refunds) per day, a series per tool."""
    days = days_of(rng)
    return Chart(days, _pivot(usage_by_day_tool, days, "tool", "credits"), unit="credits")


def revenue_charts(revenue_by_day: Report, rng: Range) -> list[Chart]:
    """Net revenue per day, one chart per currency (amounts of two currencies never add)."""
    days = days_of(rng)
    return [
        Chart(days, [Series("net revenue", s.values)], unit=s.name)
        for s in _pivot(revenue_by_day, days, "currency", "net_minor")
    ]


def liability_chart(series: Report, rng: Range) -> Chart:
    """Outstanding credits at the end of each day, a series per credit type."""
    days = days_of(rng)
    return Chart(days, _pivot(series, days, "credit_type", "balance"), unit="credits")
