"""Report rows shaped for the overview's charts: every day of the range on the axis, zeros
for days without rows; one chart per unit (credit type or currency), never two units in one
chart: a tool's series is in the chart of the credit type it charges."""

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
        ("day", "tool", "credit_type", "charges", "refunds", "credits"),
        [
            ("2026-11-01", "GPT", "credits", 2, 0, 30),
            ("2026-11-03", "GPT", "credits", 1, 1, 5),
            ("2026-11-03", "IMG", "credits", 1, 0, 9),
        ],
    )
    [chart] = charts.usage_charts(usage, rng)
    assert chart.labels == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert [(s.name, s.values) for s in chart.series] == [("GPT", [30, 0, 5]), ("IMG", [0, 0, 9])]


def test_usage_is_one_chart_per_credit_type_with_its_tools() -> None:
    rng = Range(NOV_1_MS, NOV_1_MS + 2 * DAY_MS)
    usage = Report(
        "usage",
        ("day", "tool", "credit_type", "charges", "refunds", "credits"),
        [
            ("2026-11-01", "LLM_CHAT", "credits", 3, 0, 3),
            ("2026-11-01", "VIDEO_GEN", "video_seconds", 1, 0, 40),
            ("2026-11-02", "IMAGE_GEN", "credits", 2, 0, 20),
            ("2026-11-02", "VIDEO_GEN", "video_seconds", 2, 1, 25),
        ],
    )
    got = {c.unit: [(s.name, s.values) for s in c.series] for c in charts.usage_charts(usage, rng)}
    assert got == {
        "credits": [("IMAGE_GEN", [0, 20]), ("LLM_CHAT", [3, 0])],
        "video_seconds": [("VIDEO_GEN", [40, 25])],
    }
    assert [c.unit for c in charts.usage_charts(usage, rng)] == ["credits", "video_seconds"]


def test_liability_is_one_chart_per_credit_type() -> None:
    rng = Range(NOV_1_MS, NOV_1_MS + 2 * DAY_MS)
    series = Report(
        "liability_series",
        ("day", "credit_type", "balance"),
        [
            ("2026-11-01", "credits", 100),
            ("2026-11-01", "video_seconds", 600),
            ("2026-11-02", "credits", 90),
            ("2026-11-02", "video_seconds", 540),
        ],
    )
    got = [
        (c.unit, [(s.name, s.values) for s in c.series])
        for c in charts.liability_charts(series, rng)
    ]
    assert got == [
        ("credits", [(charts.LIABILITY_SERIES, [100, 90])]),
        ("video_seconds", [(charts.LIABILITY_SERIES, [600, 540])]),
    ]


def test_no_rows_draw_no_chart() -> None:
    rng = Range(NOV_1_MS, NOV_1_MS + DAY_MS)
    empty = Report("usage", ("day", "tool", "credit_type", "charges", "refunds", "credits"), [])
    assert charts.usage_charts(empty, rng) == []


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
