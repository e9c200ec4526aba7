"""The dashboard's session check needs SQL (is the key still live?): while SQL is down it
answers 503 `database-unavailable`, never a 500 (issue 12 item 1)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import redis
import redis.asyncio
from fastapi import FastAPI

from api import errors
from api.admin.session import SESSION_COOKIE, PageSession
from api.state import AppState
from meter import AsyncMeter
from meter.keys import Keys
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.settings import Settings

SECRET = b"test-secret-session"
# Nothing listens on port 1: every connection is refused at once, as with a stopped server.
SQL_DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/creditmeter"


async def test_a_dashboard_page_with_sql_down_is_503_not_500(
    redis_async: redis.asyncio.Redis, redis_sync: redis.Redis, redis_url: str, keys: Keys
) -> None:
    engine = engine_for(SQL_DOWN_URL)
    app = FastAPI()
    errors.install(app)
    app.state.cm = AppState(
        settings=Settings(database_url=SQL_DOWN_URL, secret_key=SECRET.decode()),
        keys=keys,
        redis_url=redis_url,
        redis=redis_async,
        meter=AsyncMeter(redis_async, keys=keys, loader=SqlLoader(engine, keys)),
        engine=engine,
        secret_key=SECRET,
    )

    @app.get("/admin/page")
    async def page(session: PageSession) -> dict[str, Any]:
        return {"key_id": session.key_id}

    cookie = "a-session-cookie-value"
    name = keys.admin_session(hashlib.sha256(cookie.encode()).hexdigest())
    redis_sync.hset(name, mapping={"key_id": "key_x", "key_prefix": "cm_live_x", "csrf": "t"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", cookies={SESSION_COOKIE: cookie}
    ) as c:
        r = await c.get("/admin/page")
    redis_sync.delete(name)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("database-unavailable")
