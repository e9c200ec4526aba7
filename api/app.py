"""The FastAPI app factory: `uvicorn --factory api.app:create_app` (or `creditmeter api`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from api import access_log, errors, metrics, openapi_doc, pubsub
from api.admin.render import STATIC_DIR, STATIC_PATH
from api.admin.session import LoginRequired
from api.state import AppState
from meter import AsyncMeter
from meter.connect import checked_redis_url, keys_from
from meter.redis_conn import async_client
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.secret import secret_key
from sync.settings import Settings, get_settings

API_TITLE = "creditmeter"
API_VERSION = "1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Refuses a Redis that may evict balances (SPEC §5) before taking any request.
        url = checked_redis_url(settings)
        keys = keys_from(settings)
        client = async_client(url)
        engine = engine_for(settings.database_url)
        app.state.cm = AppState(
            settings=settings,
            keys=keys,
            redis_url=url,
            redis=client,
            meter=AsyncMeter(client, keys=keys, loader=SqlLoader(engine, keys)),
            engine=engine,
            secret_key=secret_key(settings),
        )
        try:
            yield
        finally:
            await pubsub.close_hub(client)  # the shared event connection, before its client
            app.state.cm.close_sync_redis()
            await client.aclose()

    app = FastAPI(title=API_TITLE, version=API_VERSION, lifespan=lifespan)
    errors.install(app)
    metrics.install(app)
    access_log.install(app)  # after metrics: outermost, its duration covers the whole request
    from api.admin import actions, pages, webhooks_admin
    from api.routers import (
        accounts,
        catalog,
        money,
        purchases,
        reports,
        service,
        tools,
        topups,
        webhooks,
    )

    routers = (tools, money, accounts, service, catalog, purchases, reports, webhooks, topups)
    for module in (*routers, pages, actions, webhooks_admin):
        app.include_router(module.router)
    install_dashboard(app)
    openapi_doc.install(app)
    return app


def install_dashboard(app: FastAPI) -> None:
    """The dashboard's static files (the chart library is vendored: no CDN, works offline)
    and the redirect of a page asked for without a session to the login page."""
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="admin-static")

    async def to_login(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/admin/login", status_code=303)

    app.add_exception_handler(LoginRequired, to_login)
