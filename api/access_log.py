"""One structured line per HTTP request, on stdout (`creditmeter up` appends it to api.log).

A pure ASGI middleware writes a JSON object per request once its answer is sent: `ts`,
`request_id`, `method`, `path`, `status`, `duration_ms` and, when known, `key_id` (the API
key that authenticated it, noted by api/auth.py) and `account_id` (the path's account, or
the account of the token that read it). The path is logged without its query string: a
query may carry an account token (`?token=`). The request id is the client's `X-Request-Id`
when it is a plain token, else a fresh one, and is sent back in the `X-Request-Id` header so
a caller's report names the log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request

from meter.times import now_ms, rfc3339

LOGGER_NAME = "creditmeter.access"
SCOPE_KEY = "creditmeter.access"
REQUEST_ID_HEADER = b"x-request-id"
# A client's request id is echoed into logs and headers: short printable tokens only.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(LOGGER_NAME)


@dataclass
class _Who:
    key_id: str | None = None
    account_id: str | None = None


def note_key(request: Request, key_id: str) -> None:
    """Names the API key that authenticated this request in its access line."""
    who = request.scope.get(SCOPE_KEY)
    if isinstance(who, _Who):
        who.key_id = key_id


def note_account(request: Request, account_id: str) -> None:
    """Names the account this request acted for (an account token's owner)."""
    who = request.scope.get(SCOPE_KEY)
    if isinstance(who, _Who):
        who.account_id = account_id


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            given: str = value.decode("latin-1")
            if REQUEST_ID_RE.fullmatch(given):
                return given
    return uuid.uuid4().hex


def line(
    *,
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    who: _Who,
    path_params: dict[str, Any],
) -> str:
    account = who.account_id or path_params.get("account_id")
    fields = {
        "ts": rfc3339(now_ms()),
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(duration_ms, 2),
        "key_id": who.key_id,
        "account_id": account if isinstance(account, str) else None,
    }
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


class AccessLogMiddleware:
    """Logs each HTTP request once, when its answer is complete (for an event stream, when
    the stream ends); a request that raises before answering is logged as 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id(scope)
        who = _Who()
        scope[SCOPE_KEY] = who
        status = 500

        async def logged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            log.info(
                line(
                    request_id=request_id,
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=(time.perf_counter() - start) * 1000,
                    who=who,
                    path_params=scope.get("path_params") or {},
                )
            )


def _configure_logger() -> None:
    """The lines go to stdout as they are, whatever the root logger does (uvicorn runs at
    warning level and configures only its own loggers)."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def install(app: FastAPI) -> None:
    """Adds the access-log middleware. Added last, it is outermost: it sees every answer,
    the error handlers' included, and its time covers the whole request."""
    _configure_logger()
    app.add_middleware(AccessLogMiddleware)
