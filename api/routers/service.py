"""Liveness, readiness and the sync status (SPEC §7); /metrics is added by api.metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.errors import MEDIA_TYPE, Problem
from api.state import AppState, app_state, read_sync_status

router = APIRouter(tags=["service"])
State = Annotated[AppState, Depends(app_state)]

READY_TIMEOUT_S = 2.0  # a probe that hangs is as bad as a failing one; load balancers time out ~5 s


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (liveness); says nothing about Redis or SQL."""
    return {"status": "ok"}


def _sql_ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _check(what: Any) -> str | None:
    try:
        await asyncio.wait_for(what, READY_TIMEOUT_S)
    except Exception as exc:  # any failure means "not ready"; the kind goes in the answer
        return type(exc).__name__
    return None


@router.get("/readyz", responses={503: {"content": {MEDIA_TYPE: {}}}})
async def readyz(state: State) -> Any:
    """200 when Redis and SQL both answer; 503 problem+json naming what is down."""
    redis_error, sql_error = await asyncio.gather(
        _check(state.redis.ping()), _check(run_in_threadpool(_sql_ping, state.engine))
    )
    checks = {"redis": redis_error or "ok", "sql": sql_error or "ok"}
    if redis_error or sql_error:
        down = " and ".join(k for k, v in checks.items() if v != "ok")
        p = Problem(503, f"{down} unavailable", slug="not-ready", checks=checks)
        return JSONResponse(p.body(), status_code=503, media_type=MEDIA_TYPE)
    return {"status": "ready", "checks": checks}


@router.get("/v1/status/sync")
async def status_sync(
    state: State, _: Annotated[Principal, Depends(require("admin"))]
) -> dict[str, Any]:
    """Per bucket: journal length, pending, undelivered, oldest unflushed age; queue depths,
    failed jobs, dead letters and gaps."""
    return (await run_in_threadpool(read_sync_status, state)).as_dict()
