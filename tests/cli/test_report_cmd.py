"""`creditmeter report usage|revenue|liability` over real SQL: readable tables, CSV, and a
one-line error with exit 2 for a bad range or grouping."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from cli.main import app
from tests.report_data import (
    LIABILITY,
    REVENUE_BY_CURRENCY,
    SERIES,
    USAGE_BY_DAY,
    ReportData,
    insert_report_data,
)


@pytest.fixture(scope="module")
def data(sql_url: str) -> ReportData:
    from sync.db import engine_for

    engine: Engine = engine_for(sql_url)
    return insert_report_data(engine)


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, ["report", *args])


def csv_rows(result: Result) -> list[list[str]]:
    assert result.exit_code == 0, result.output
    return list(csv.reader(io.StringIO(result.stdout)))


def test_usage_table_is_readable(cli: CliRunner, data: ReportData) -> None:
    r = run(cli, "usage", "--from", data.day0, "--to", data.day2, "--group-by", "tool,day")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stdout.splitlines() if data.tool in line]
    assert len(lines) == 2
    first = lines[0].replace("│", " ").split()
    assert first == [data.tool, data.day0, *(str(n) for n in USAGE_BY_DAY[0])]
    assert f"{data.day0}T00:00:00Z .. {data.day2}T00:00:00Z" in r.stdout


def test_usage_csv(cli: CliRunner, data: ReportData) -> None:
    rows = csv_rows(run(cli, "usage", "--from", data.day0, "--to", data.day2, "--csv"))
    assert rows[0] == ["day", "tool", "charges", "refunds", "credits"]
    ours = [r for r in rows[1:] if r[1] == data.tool]
    assert [tuple(int(v) for v in r[2:]) for r in ours] == list(USAGE_BY_DAY.values())


def test_revenue_csv_by_pack(cli: CliRunner, data: ReportData) -> None:
    args = ("--from", data.day0, "--to", data.day2, "--group-by", "pack", "--csv")
    rows = csv_rows(run(cli, "revenue", *args))
    header = rows[0]
    ours = {
        r[header.index("currency")]: tuple(
            int(r[header.index(c)])
            for c in ("purchases", "gross_minor", "refunded_minor", "net_minor")
        )
        for r in rows[1:]
        if r[header.index("pack_id")] == data.pack
    }
    assert ours == REVENUE_BY_CURRENCY


def test_liability_now_and_by_day(cli: CliRunner, data: ReportData) -> None:
    rows = csv_rows(run(cli, "liability", "--csv"))
    header = rows[0]
    (row,) = [r for r in rows[1:] if r[0] == data.credit_type]
    assert {k: int(row[header.index(k)]) for k in LIABILITY} == LIABILITY

    args = ("--from", data.day0, "--to", data.day2, "--group-by", "day", "--csv")
    series = [r for r in csv_rows(run(cli, "liability", *args)) if r[1] == data.credit_type]
    assert series == [
        [data.day0, data.credit_type, str(SERIES[0])],
        [data.day1, data.credit_type, str(SERIES[1])],
    ]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--from", "2026-11-05", "--to", "2026-11-01"), "--from"),
        (("--to", "not-a-date"), "--to"),
        (("--group-by", "week"), "--group-by"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli: CliRunner, args: tuple[str, ...], option: str
) -> None:
    r = run(cli, "usage", *args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}:"), r.stderr


def test_usage_json_is_the_apis_shape(cli: CliRunner, data: ReportData) -> None:
    r = run(cli, "usage", "--from", data.day0, "--to", data.day2, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["report"] == "usage" and doc["group_by"] == ["day", "tool"]
    assert (doc["from"], doc["to"]) == (f"{data.day0}T00:00:00Z", f"{data.day2}T00:00:00Z")
    assert doc["columns"] == ["day", "tool", "charges", "refunds", "credits"]
    ours = [row for row in doc["data"] if row["tool"] == data.tool]
    assert [(row["charges"], row["refunds"], row["credits"]) for row in ours] == list(
        USAGE_BY_DAY.values()
    )


def test_liability_json_and_csv_with_json_is_a_usage_error(
    cli: CliRunner, data: ReportData
) -> None:
    r = run(cli, "liability", "--json")
    assert r.exit_code == 0, r.output
    (row,) = [row for row in json.loads(r.stdout)["data"] if row["credit_type"] == data.credit_type]
    assert {k: row[k] for k in LIABILITY} == LIABILITY
    both = run(cli, "usage", "--csv", "--json")
    assert both.exit_code == 2
    assert both.stderr.strip().splitlines() == ["error: --json: give --csv or --json, not both"]
