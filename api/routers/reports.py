"""Admin reports over the synced SQL (SPEC §7): usage, revenue and liability as JSON or CSV.

Thin: sync/reports.py parses ranges and groupings and runs the queries; this module turns a
ReportError into a 422 problem naming the query parameter and picks the output format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.auth import AdminKey
from api.errors import Problem, invalid
from api.state import AppState, app_state
from meter.times import now_ms, rfc3339
from sync import reports

router = APIRouter(prefix="/v1/reports", tags=["reports"])
State = Annotated[AppState, Depends(app_state)]

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

QueryFrom = Annotated[
    str | None,
    Query(
        alias="from",
        max_length=40,
        description="start, inclusive: RFC 3339 or a UTC date (2026-11-01); default to - 30 days",
    ),
]
QueryTo = Annotated[
    str | None,
    Query(max_length=40, description="end, exclusive: RFC 3339 or a UTC date; default now"),
]
QueryGroupBy = Annotated[
    str | None, Query(max_length=100, description="comma-separated, e.g. day,tool")
]
QueryFormat = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]


class ReportOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    report: str
    from_: str = Field(alias="from")  # RFC 3339, inclusive
    to: str  # RFC 3339, exclusive
    group_by: list[str]
    columns: list[str]
    data: list[dict[str, int | str | None]]


def _unprocessable(exc: reports.ReportError) -> Problem:
    return invalid(f"query.{exc.field}", str(exc), detail=f"{exc.field}: {exc}")


def _answer(
    report: reports.Report,
    rng: reports.Range,
    group_by: tuple[str, ...],
    fmt: str,
) -> Response:
    if fmt == "csv":
        name = f"{report.name}-{rfc3339(rng.from_ms)[:10]}-{rfc3339(rng.to_ms)[:10]}.csv"
        return Response(
            report.to_csv(),
            media_type=CSV_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    out = ReportOut(
        report=report.name,
        from_=rfc3339(rng.from_ms),
        to=rfc3339(rng.to_ms),
        group_by=list(group_by),
        columns=list(report.columns),
        data=report.as_dicts(),
    )
    return Response(out.model_dump_json(by_alias=True), media_type="application/json")


@dataclass(frozen=True)
class ReportParams:
    from_: str | None
    to: str | None
    group_by: str | None
    format: str


async def report_params(
    from_: QueryFrom = None,
    to: QueryTo = None,
    group_by: QueryGroupBy = None,
    format: QueryFormat = "json",
) -> ReportParams:
    """The query every report takes (async: no thread hop for a plain dependency)."""
    return ReportParams(from_, to, group_by, format)


Params = Annotated[ReportParams, Depends(report_params)]


async def _run(
    params: ReportParams,
    allowed: tuple[str, ...],
    default: tuple[str, ...],
    query: Callable[[reports.Range, tuple[str, ...]], reports.Report],
) -> Response:
    try:
        rng = reports.parse_range(params.from_, params.to, now_ms())
        group_by = reports.parse_group_by(params.group_by, allowed, default)
    except reports.ReportError as exc:
        raise _unprocessable(exc) from exc
    report = await run_in_threadpool(query, rng, group_by)
    return _answer(report, rng, group_by, params.format)


RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/csv": {}}, "description": "the report (CSV with format=csv)"}
}


@router.get("/usage", response_model=ReportOut, responses=RESPONSES)
async def usage(
    state: State,
    _: AdminKey,
    params: Params,
) -> Response:
    """Charges and refunds per group: counts and credits consumed (charges minus refunds).
    group_by: any of day, tool, account, credit_type (default day,tool)."""
    return await _run(
        params,
        reports.USAGE_GROUPS,
        ("day", "tool"),
        lambda rng, groups: reports.usage(state.engine, rng, groups),
    )


@router.get("/revenue", response_model=ReportOut, responses=RESPONSES)
async def revenue(
    state: State,
    _: AdminKey,
    params: Params,
) -> Response:
    """Paid purchases per group and currency, in minor units: gross, refunded, net.
    group_by: any of day, pack, plan (default day)."""
    return await _run(
        params,
        reports.REVENUE_GROUPS,
        ("day",),
        lambda rng, groups: reports.revenue(state.engine, rng, groups),
    )


@router.get("/liability", response_model=ReportOut, responses=RESPONSES)
async def liability(
    state: State,
    _: AdminKey,
    params: Params,
) -> Response:
    """Credits owed to users. group_by=credit_type (default): now, per credit type, paid and
    promotional, expiring within 7 and 30 days, debt and held (from and to are checked but
    do not apply). group_by=day: the balance outstanding at the end of each day of the range."""

    def query(rng: reports.Range, groups: tuple[str, ...]) -> reports.Report:
        if "day" in groups:
            return reports.liability_series(state.engine, rng)
        return reports.liability(state.engine, now_ms())

    return await _run(params, reports.LIABILITY_GROUPS, ("credit_type",), query)
