"""Liveness, readiness and the sync status (SPEC §7); /metrics is added by api.metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.errors import MEDIA_TYPE, Problem
from api.state import AppState, app_state, read_sync_status
from sync.status import flush_progress, flush_stalled, journal_status

router = APIRouter(tags=["service"])
State = Annotated[AppState, Depends(app_state)]

READY_TIMEOUT_S = 2.0  # a probe that hangs is as bad as a failing one; load balancers time out ~5 s
# Redis refuses writes at maxmemory (noeviction): at 98% the next charges' journal entries may
# not fit, so the process stops taking traffic before they fail rather than after.
REDIS_MEMORY_FULL_RATIO = 0.98
OK = "ok"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (liveness); says nothing about Redis or SQL."""
    return {"status": "ok"}


def _sql_ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _check(what: Awaitable[Any]) -> str | None:
    try:
        await asyncio.wait_for(what, READY_TIMEOUT_S)
    except Exception as exc:  # any failure means "not ready"; the kind goes in the answer
        return type(exc).__name__
    return None


def redis_memory_check(info: dict[str, Any]) -> str:
    """ "ok", or "full" when used_memory is at REDIS_MEMORY_FULL_RATIO of maxmemory (no
    maxmemory set: the machine's memory is the limit, which Redis cannot report)."""
    limit = int(info.get("maxmemory", 0) or 0)
    if limit and int(info.get("used_memory", 0)) >= REDIS_MEMORY_FULL_RATIO * limit:
        return "full"
    return OK


def _flush_check(state: AppState) -> str:
    """ "ok" or "stalled" (sync.status.flush_stalled), from Redis alone (blocking)."""
    client = state.sync_redis()
    buckets = journal_status(client, state.keys)
    unflushed = sum(b.unflushed for b in buckets)
    ages = [b.oldest_unflushed_age_ms for b in buckets if b.oldest_unflushed_age_ms is not None]
    progress = flush_progress(client, state.keys)
    return "stalled" if flush_stalled(progress, unflushed, max(ages, default=None)) else OK


async def _checked(what: Awaitable[str]) -> str:
    """The check's own answer, or the kind of error it met within READY_TIMEOUT_S."""
    try:
        return await asyncio.wait_for(what, READY_TIMEOUT_S)
    except Exception as exc:  # the probe reports it; it never fails the request itself
        return type(exc).__name__


@router.get("/readyz", responses={503: {"content": {MEDIA_TYPE: {}}}})
async def readyz(state: State) -> Any:
    """Whether this process should get traffic; every probe bounded by READY_TIMEOUT_S.

    - 200 `{"status": "ready"}`: Redis, SQL, Redis memory and the flush all "ok".
    - 200 `{"status": "degraded", "charging": "ok"}`: Redis answers and has room, but SQL is
      down (`"sql"` names the error) or the flush is not making progress (`"flush":
      "stalled"`, see sync.status.flush_stalled). Charges, holds, refunds and balance reads
      are served from Redis alone and journaled; SQL catches up when it is back. Only what
      needs SQL answers 503 meanwhile (ledger listings, reports, admin, the dashboard).
    - 503 problem+json naming redis: Redis does not answer; nothing can be charged.
    - 503 problem+json naming Redis memory: used_memory at REDIS_MEMORY_FULL_RATIO of
      maxmemory; charges would fail to journal.
    """
    # asyncio's threads, not anyio's: a probe past its time answers, the thread ends alone.
    redis_error, sql_error = await asyncio.gather(
        _check(state.redis.ping()), _check(asyncio.to_thread(_sql_ping, state.engine))
    )
    checks = {"redis": redis_error or OK, "sql": "down" if sql_error else OK}
    if sql_error:
        checks["sql_error"] = sql_error
    if redis_error:
        return _not_ready("redis unavailable", checks)
    memory, flush = await asyncio.gather(
        _checked(_memory(state)), _checked(asyncio.to_thread(_flush_check, state))
    )
    checks["redis_memory"], checks["flush"] = memory, flush
    if memory != OK:
        return _not_ready(f"Redis memory {memory}: charges cannot be journaled", checks)
    degraded = any(checks[k] != OK for k in ("sql", "flush"))
    return {
        "status": "degraded" if degraded else "ready",
        "checks": checks,
        "charging": OK,
    }


async def _memory(state: AppState) -> str:
    return redis_memory_check(await state.redis.info("memory"))


def _not_ready(detail: str, checks: dict[str, str]) -> JSONResponse:
    p = Problem(503, detail, slug="not-ready", checks=checks)
    return JSONResponse(p.body(), status_code=503, media_type=MEDIA_TYPE)


@router.get("/v1/status/sync")
async def status_sync(
    state: State, _: Annotated[Principal, Depends(require("admin"))]
) -> dict[str, Any]:
    """Per bucket: journal length, pending, undelivered, oldest unflushed age; the flusher's
    progress (`flush`: ok_at_ms, error, error_at_ms) and `flush_stalled`; queue depths, failed
    jobs, dead letters, gaps, Redis losses and Stripe events not applied.

    Answers from Redis alone while SQL is down: then `sql` is "down" and the SQL figures
    (dead_letters, gaps, redis_lost, stripe_events_unapplied) are null, while the journal
    figures keep showing the backlog grow and, once SQL is back, drain."""
    return (await run_in_threadpool(read_sync_status, state)).as_dict()
