"""GET /v1/reports/usage|revenue|liability against a real API process and SQL: admin only,
JSON and CSV, every grouping, and 422 naming the parameter for bad ranges and groupings."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.api.conftest import bearer
from tests.report_data import (
    LIABILITY,
    REVENUE_BY_CURRENCY,
    SERIES,
    USAGE_BY_ACCOUNT,
    USAGE_BY_DAY,
    ReportData,
    insert_report_data,
)


@pytest.fixture(scope="module")
def data(api_engine: Engine) -> ReportData:
    return insert_report_data(api_engine)


def report(http: httpx.Client, key: str, name: str, **params: str) -> dict[str, Any]:
    r = http.get(f"/v1/reports/{name}", params=params, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return dict(r.json())


def window(d: ReportData) -> dict[str, str]:
    return {"from": d.day0, "to": d.day2}


def test_usage_by_day_and_tool(http: httpx.Client, admin_key: str, data: ReportData) -> None:
    body = report(http, admin_key, "usage", **window(data), group_by="day,tool")
    assert body["from"] == f"{data.day0}T00:00:00Z" and body["to"] == f"{data.day2}T00:00:00Z"
    assert body["group_by"] == ["day", "tool"]
    assert body["columns"] == ["day", "tool", "charges", "refunds", "credits"]
    ours = [r for r in body["data"] if r["tool"] == data.tool]
    assert ours == [
        {"day": day, "tool": data.tool, "charges": c, "refunds": f, "credits": n}
        for day, (c, f, n) in zip((data.day0, data.day1), USAGE_BY_DAY.values(), strict=True)
    ]


def test_usage_by_account_as_csv(http: httpx.Client, admin_key: str, data: ReportData) -> None:
    r = http.get(
        "/v1/reports/usage",
        params={**window(data), "group_by": "account,credit_type", "format": "csv"},
        headers=bearer(admin_key),
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["account_id", "credit_type", "charges", "refunds", "credits"]
    ours = {
        row[0]: tuple(int(v) for v in row[2:]) for row in rows[1:] if row[1] == data.credit_type
    }
    assert ours == {data.a1: USAGE_BY_ACCOUNT["a1"], data.a2: USAGE_BY_ACCOUNT["a2"]}


def test_revenue_by_pack(http: httpx.Client, admin_key: str, data: ReportData) -> None:
    body = report(http, admin_key, "revenue", **window(data), group_by="pack")
    ours = {r["currency"]: r for r in body["data"] if r["pack_id"] == data.pack}
    assert {
        c: (r["purchases"], r["gross_minor"], r["refunded_minor"], r["net_minor"])
        for c, r in ours.items()
    } == REVENUE_BY_CURRENCY


def test_liability_now_and_by_day(http: httpx.Client, admin_key: str, data: ReportData) -> None:
    now = report(http, admin_key, "liability")
    (row,) = [r for r in now["data"] if r["credit_type"] == data.credit_type]
    assert {k: row[k] for k in LIABILITY} == LIABILITY

    series = report(http, admin_key, "liability", **window(data), group_by="day")
    ours = [r for r in series["data"] if r["credit_type"] == data.credit_type]
    assert [(r["day"], r["balance"]) for r in ours] == [
        (data.day0, SERIES[0]),
        (data.day1, SERIES[1]),
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-11-02", "to": "2026-11-01"}, "from"),
        ({"from": "2026-11-01", "to": "2026-11-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "from"),  # longer than the longest span
        ({"group_by": "week"}, "group_by"),
        ({"group_by": "day,day"}, "group_by"),
    ],
)
def test_bad_ranges_and_groupings_are_422(
    http: httpx.Client, admin_key: str, params: dict[str, str], field: str
) -> None:
    r = http.get("/v1/reports/usage", params=params, headers=bearer(admin_key))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == f"query.{field}"


def test_unknown_format_is_422(http: httpx.Client, admin_key: str) -> None:
    r = http.get("/v1/reports/revenue", params={"format": "xml"}, headers=bearer(admin_key))
    assert r.status_code == 422


@pytest.mark.parametrize("name", ["usage", "revenue", "liability"])
def test_reports_need_an_admin_key(
    http: httpx.Client, read_key: str, meter_key: str, name: str
) -> None:
    assert http.get(f"/v1/reports/{name}").status_code == 401
    for key in (read_key, meter_key):
        assert http.get(f"/v1/reports/{name}", headers=bearer(key)).status_code == 403
