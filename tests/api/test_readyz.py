"""GET /readyz (issue 12 items 1, 2, 6): degraded but ready with SQL down or a stalled flush,
not ready (503 problem+json) with Redis down or Redis memory full. Real Redis and SQL; the
servers that are "down" are addresses nothing listens on, and the full Redis is a private
one whose maxmemory is set to what it already uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from fastapi import FastAPI

from api import errors
from api.routers import service
from api.routers.service import REDIS_MEMORY_FULL_RATIO, redis_memory_check
from api.state import AppState
from meter import AsyncMeter
from meter.embedded import EmbeddedRedis
from meter.keys import Keys
from meter.redis_conn import async_client
from meter.times import now_ms
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.settings import Settings
from sync.status import FLUSH_STALL_MS

SECRET = b"test-secret-readyz"
# Nothing listens on port 1: every connection is refused at once, as with a stopped server.
SQL_DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/creditmeter"
REDIS_DOWN_URL = "redis://127.0.0.1:1/0"


def _app(redis_url: str, sql_url: str, keys: Keys) -> FastAPI:
    engine = engine_for(sql_url)
    client = async_client(redis_url)
    state = AppState(
        settings=Settings(database_url=sql_url, secret_key=SECRET.decode(), key_prefix=keys.prefix),
        keys=keys,
        redis_url=redis_url,
        redis=client,
        meter=AsyncMeter(client, keys=keys, loader=SqlLoader(engine, keys)),
        engine=engine,
        secret_key=SECRET,
    )
    app = FastAPI()
    errors.install(app)
    app.state.cm = state
    app.include_router(service.router)
    return app


async def _ready(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/readyz")
    state: AppState = app.state.cm
    await state.redis.aclose()
    state.sync_redis().close()
    return r


def _problem(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"].endswith("not-ready")
    return body


async def test_all_up_is_ready(redis_url: str, sql_url: str, keys: Keys) -> None:
    r = await _ready(_app(redis_url, sql_url, keys))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "sql": "ok", "redis_memory": "ok", "flush": "ok"},
        "charging": "ok",
    }


async def test_sql_down_is_degraded_but_ready_for_charging(redis_url: str, keys: Keys) -> None:
    r = await _ready(_app(redis_url, SQL_DOWN_URL, keys))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "degraded" and body["charging"] == "ok"
    assert body["checks"]["sql"] == "down" and body["checks"]["redis"] == "ok"
    assert body["checks"]["sql_error"] == "OperationalError"


async def test_redis_down_is_503_naming_redis(sql_url: str, keys: Keys) -> None:
    body = _problem(await _ready(_app(REDIS_DOWN_URL, sql_url, keys)))
    assert "redis" in body["detail"] and body["checks"]["redis"] != "ok"


async def test_a_stalled_flush_is_degraded_not_unready(
    redis_url: str, sql_url: str, keys: Keys, redis_sync: redis.Redis
) -> None:
    old_ms = now_ms() - FLUSH_STALL_MS - 1_000
    redis_sync.xadd(keys.journal(0), {"k": "waiting"}, id=f"{old_ms}-0")
    try:
        r = await _ready(_app(redis_url, sql_url, keys))
    finally:
        redis_sync.delete(keys.journal(0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "degraded" and body["checks"]["flush"] == "stalled"
    assert body["charging"] == "ok"


def test_redis_memory_check_threshold() -> None:
    assert redis_memory_check({"used_memory": 10**9, "maxmemory": 0}) == "ok"  # no limit set
    limit = 1_000_000
    assert redis_memory_check({"used_memory": limit - 30_000, "maxmemory": limit}) == "ok"
    full_at = int(REDIS_MEMORY_FULL_RATIO * limit)
    assert redis_memory_check({"used_memory": full_at, "maxmemory": limit}) == "full"


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[str]:
    """A private redis-server (never the shared one) whose maxmemory is what it uses."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    url = server.start()
    client = redis.Redis.from_url(url)
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used))
        yield url
    finally:
        client.close()
        server.stop()


async def test_redis_memory_full_is_503_naming_redis_memory(
    full_redis: str, sql_url: str, keys: Keys
) -> None:
    body = _problem(await _ready(_app(full_redis, sql_url, keys)))
    assert "Redis memory" in body["detail"] and body["checks"]["redis_memory"] == "full"
