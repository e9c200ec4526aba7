"""The HTTP bench's reference: a trivial FastAPI JSON endpoint, `POST /trivial`.

Served exactly like the API (`uvicorn --factory bench.trivial_app:create_app`, the same
worker count, host, log level and uvicorn defaults: uvloop + httptools), and sent the very
same requests as `POST /v1/charges` (same headers and JSON body, which it does not read), so
the ratio charge / trivial measures what the charge route costs on top of FastAPI itself.
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI(title="creditmeter bench: trivial endpoint")

    @app.post("/trivial", status_code=201)
    async def trivial() -> dict[str, object]:
        return {"ok": True, "balance": 0}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
