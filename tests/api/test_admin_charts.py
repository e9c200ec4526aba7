"""Report rows shaped for the overview's charts: every day of the range on the axis, zeros
for days without rows, one series per tool / currency / credit type."""

from __future__ import annotations

from api.admin import charts
from sync.reports import Range, Report

DAY_MS = 86_400_000
NOV_1_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z


def test_days_of_a_range_include_its_partial_last_day() -> None:
    rng = Range(NOV_1_MS, NOV_1_MS + 2 * DAY_MS + 1)
    assert charts.days_of(rng) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert charts.end_day(rng) == "2026-11-04"
    assert charts.end_day(Range(NOV_1_MS, NOV_1_MS + 2 * DAY_MS)) == "2026-11-03"


def test_usage_chart_fills_missing_days_with_zero() -> None:
    rng = Range(NOV_1_MS, NOV_1_MS + 3 * DAY_MS)
    usage = Report(
        "usage",
        ("day", "tool", "charges", "refunds", "credits"),
        [
            ("2026-11-01", "GPT", 2, 0, 30),
            ("2026-11-03", "GPT", 1, 1, 5),
            ("2026-11-03", "IMG", 1, 0, 9),
        ],
    )
    chart = charts.usage_chart(usage, rng)
    assert chart.labels == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert [(s.name, s.values) for s in chart.series] == [("GPT", [30, 0, 5]), ("IMG", [0, 0, 9])]


def test_revenue_is_one_chart_per_currency() -> None:
    rng = Range(NOV_1_MS, NOV_1_MS + 2 * DAY_MS)
    columns = (
        "day",
        "currency",
        "purchases",
        "credits",
        "gross_minor",
        "refunded_minor",
        "net_minor",
    )
    revenue = Report(
        "revenue",
        columns,
        [("2026-11-01", "usd", 1, 50, 500, 0, 500), ("2026-11-02", "eur", 1, 50, 450, 50, 400)],
    )
    got = [(c.unit, c.series[0].values) for c in charts.revenue_charts(revenue, rng)]
    assert got == [("eur", [0, 400]), ("usd", [500, 0])]
