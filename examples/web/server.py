"""The example app's backend for the frontend kit's page (examples/web): a runnable sample.

A browser must never hold an API key, so the page talks to its own app, and the app to
creditmeter with its `meter` key:

- `POST /api/credits/session`: an account token for the signed-in user
  (POST /v1/accounts/{id}/tokens); the page's `useCredits` and its `onTokenExpired` call it.
- `GET /api/credits/quote?credit_type=&credits=`: GET /v1/prices/quote for the user's account,
  so the price carries their plan's discount (`useBuyCredits`).
- `POST /api/credits/checkout` (`{"credit_type", "credits"}` or `{"pack_id"}`): a Stripe
  Checkout session for the user (POST /v1/checkout/sessions); the kit goes to its `url`.
- `POST /api/generate`: the app's paid feature, one IMAGE_GEN charge (POST /v1/charges).
- `GET /v1/accounts/{id}/balance|events`: passed through to creditmeter, so the page reads
  its live balance from its own origin. In production a reverse proxy routing `/v1/` to
  creditmeter does the same; the kit's `baseUrl` can also name creditmeter's origin.

"The signed-in user" is EXAMPLE_ACCOUNT_ID here; a real app takes it from its session.

    CREDITMETER_API_URL=http://127.0.0.1:8000 CREDITMETER_API_KEY=cm_live_... \
    EXAMPLE_ACCOUNT_ID=user_1 uvicorn examples.web.server:app --port 8002

serves the page built by `make web` (examples/web/dist) at http://127.0.0.1:8002/.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

DIST = Path(os.environ.get("EXAMPLE_DIST", Path(__file__).parent / "dist"))
TOOL = os.environ.get("EXAMPLE_TOOL", "IMAGE_GEN")
TOKEN_TTL_S = 900  # creditmeter's default; the kit asks for a new one before it runs out
HTTP_TIMEOUT_S = 10.0
# The event stream stays open for up to an hour and is silent between pings (15 s).
STREAM_TIMEOUT = httpx.Timeout(HTTP_TIMEOUT_S, read=None)
CHECKOUT_FIELDS = ("credit_type", "credits", "pack_id")  # what the page may choose; not the account
PASSED_HEADERS = ("content-type", "retry-after", "cache-control", "idempotent-replayed")


class Settings:
    def __init__(self) -> None:
        self.api_url = os.environ.get("CREDITMETER_API_URL", "http://127.0.0.1:8000").rstrip("/")
        self.api_key = os.environ.get("CREDITMETER_API_KEY", "")
        self.account_id = os.environ.get("EXAMPLE_ACCOUNT_ID", "user_1")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings()
    async with httpx.AsyncClient(
        base_url=settings.api_url,
        headers={"Authorization": f"Bearer {settings.api_key}"},
        timeout=HTTP_TIMEOUT_S,
    ) as api:
        app.state.settings, app.state.api = settings, api
        yield


app = FastAPI(title="creditmeter frontend kit example", lifespan=lifespan)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _api(request: Request) -> httpx.AsyncClient:
    api: httpx.AsyncClient = request.app.state.api
    return api


def _passed(r: httpx.Response) -> Response:
    """creditmeter's answer as this app's, status, problem+json and Retry-After included."""
    headers = {k: v for k, v in r.headers.items() if k.lower() in PASSED_HEADERS}
    return Response(r.content, status_code=r.status_code, headers=headers)


@app.post("/api/credits/session")
async def session(request: Request) -> Response:
    account_id = _settings(request).account_id
    r = await _api(request).post(
        f"/v1/accounts/{account_id}/tokens", json={"ttl_seconds": TOKEN_TTL_S}
    )
    return _passed(r)


@app.get("/api/credits/quote")
async def quote(
    request: Request,
    credit_type: Annotated[str, Query()],
    credits: Annotated[str, Query()],
) -> Response:
    params = {
        "credit_type": credit_type,
        "credits": credits,
        "account_id": _settings(request).account_id,
    }
    return _passed(await _api(request).get("/v1/prices/quote", params=params))


@app.post("/api/credits/checkout")
async def checkout(request: Request, body: Annotated[dict[str, Any], Body()]) -> Response:
    back = str(request.base_url)
    wanted: dict[str, Any] = {k: body[k] for k in CHECKOUT_FIELDS if k in body}
    payload: dict[str, Any] = {
        **wanted,
        "account_id": _settings(request).account_id,
        "success_url": back + "?checkout=success",
        "cancel_url": back + "?checkout=cancel",
    }
    return _passed(await _api(request).post("/v1/checkout/sessions", json=payload))


@app.post("/api/generate")
async def generate(request: Request) -> Response:
    # One key per click: a retry of this request would send the same one (Idempotency-Key).
    key = request.headers.get("Idempotency-Key") or f"example-{uuid.uuid4().hex}"
    r = await _api(request).post(
        "/v1/charges",
        json={"account_id": _settings(request).account_id, "tool": TOOL},
        headers={"Idempotency-Key": key},
    )
    return _passed(r)


@app.get("/v1/accounts/{account_id}/balance")
async def balance(request: Request, account_id: str) -> Response:
    r = await _api(request).get(
        f"/v1/accounts/{account_id}/balance", headers=_browser_auth(request)
    )
    return _passed(r)


@app.get("/v1/accounts/{account_id}/events")
async def events(request: Request, account_id: str) -> Response:
    api = _api(request)
    upstream = api.build_request(
        "GET",
        f"/v1/accounts/{account_id}/events",
        headers={**_browser_auth(request), "Accept": "text/event-stream"},
        timeout=STREAM_TIMEOUT,
    )
    r = await api.send(upstream, stream=True)
    if r.status_code != 200:
        await r.aread()
        await r.aclose()
        return _passed(r)

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for chunk in r.aiter_raw():
                yield chunk
        finally:
            await r.aclose()  # the browser left: close creditmeter's stream too

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)


def _browser_auth(request: Request) -> dict[str, str]:
    """The browser's account token replaces the app's key: the page reads only what its
    token allows."""
    return {"Authorization": request.headers.get("Authorization", "")}


@app.exception_handler(httpx.HTTPError)
async def creditmeter_unreachable(request: Request, exc: httpx.HTTPError) -> JSONResponse:
    problem = {
        "type": "urn:creditmeter:problem:upstream-unavailable",
        "title": "creditmeter unreachable",
        "status": 502,
        "detail": f"creditmeter did not answer: {exc!r}",
    }
    return JSONResponse(problem, status_code=502, media_type="application/problem+json")


if DIST.is_dir():
    app.mount("/", StaticFiles(directory=DIST, html=True), name="page")
