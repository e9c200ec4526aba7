"""Idempotency-Key for every POST that changes money (SPEC §7), like Stripe's.

Two layers. The Lua scripts store each applied result under (account, key) with a fingerprint
of the operation, so a replay returns the stored result and concurrent duplicates apply once.
That store lives in the account's slot, so it cannot see the same key used for another
account, hold or route. This module adds the deployment-wide check: one Redis key per
Idempotency-Key holds a fingerprint of method, path and body (`SET NX GET`). The claims of
requests in flight together go to Redis in one pipeline (`ClaimBatcher`): one write and one
read for all of them, not a pooled connection and a round trip each.

- missing header: 400; the header outside 1-255 printable ASCII: 422;
- same key, other method/path/body: 422 (nothing runs);
- same key and body: the operation runs again and the script answers the stored result,
  sent with `Idempotent-Replayed: true`;
- an executed request that failed on the domain (402, 403, 404, 409) stores that answer, and
  a replay returns it as it was (as Stripe does; use a new key to try again). Validation
  errors (422, also when the meter refuses an argument after the key was claimed: nothing
  ran) store nothing and release the claim, so a corrected retry with the same key runs.
  Outages (503) store nothing either, but keep the claim: the script may have run before
  the connection failed, so only a retry with the same body may use the key (and the
  script replays what it applied).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import redis.asyncio
import redis.exceptions
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.errors import MEDIA_TYPE, Problem, from_meter_error, invalid
from api.state import AppState
from meter import bounds, validate
from meter.errors import MeterError

REPLAYED_HEADER = "Idempotent-Replayed"
# Compare-and-delete in one step: a GET then DEL could delete another request's claim.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
STORED_ERROR_STATUSES = frozenset({402, 403, 404, 409})  # the request ran and was refused
_SEP = "\n"
log = logging.getLogger("creditmeter.api")


IdempotencyHeader = Annotated[
    str | None,
    Header(
        description="1-255 printable ASCII characters; required on every POST that changes "
        "money. A retry with the same key never applies twice.",
    ),
]


async def idempotency_key(idempotency_key: IdempotencyHeader = None) -> str:
    if idempotency_key is None:
        raise Problem(400, "the Idempotency-Key header is required", slug="idempotency-key-missing")
    return _checked(idempotency_key)


async def optional_idempotency_key(idempotency_key: IdempotencyHeader = None) -> str | None:
    return None if idempotency_key is None else _checked(idempotency_key)


def _checked(idempotency_key: str) -> str:
    if not validate.IDEMPOTENCY_RE.fullmatch(idempotency_key):
        raise invalid(
            "header.Idempotency-Key",
            "invalid",
            detail="Idempotency-Key must be 1-255 printable ASCII characters",
        )
    return idempotency_key


def fingerprint(request: Request, body: BaseModel | None) -> str:
    payload = body.model_dump(mode="json", exclude_unset=False) if body is not None else None
    canonical = json.dumps(
        [request.method, request.scope["path"], payload], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ClaimBatcher:
    """Sends the claims made while the event loop runs other ready work as one pipeline.

    A claim waits for the loop's next turn (call_soon), so the requests parsed in the same
    turn claim together; the claims of one round do not depend on each other."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.redis = client
        self._pending: list[tuple[str, str, asyncio.Future[Any]]] = []

    def claim(self, redis_key: str, fp: str) -> asyncio.Future[Any]:
        """-> the value the key held before (None: this request now owns it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._start_round)
        self._pending.append((redis_key, fp, future))
        return future

    def _start_round(self) -> None:
        batch, self._pending = self._pending, []
        asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[tuple[str, str, asyncio.Future[Any]]]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for redis_key, fp, _ in batch:
                # get=True: redis-py answers the previous value, not whether SET wrote.
                pipe.execute_command(
                    "SET", redis_key, fp, "NX", "GET", "EX", bounds.IDEMPOTENCY_TTL_S, get=True
                )
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # every waiting request must hear about a failed round
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the request was cancelled (client gone)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def claims(app: FastAPI, client: redis.asyncio.Redis) -> ClaimBatcher:
    """The app's claim batcher over `client` (the balance Redis), made on first use."""
    batcher: ClaimBatcher | None = getattr(app.state, "idempotency_claims", None)
    if batcher is None or batcher.redis is not client:
        batcher = app.state.idempotency_claims = ClaimBatcher(client)
    return batcher


async def run_idempotent(
    state: AppState,
    request: Request,
    response: Response,
    key: str,
    body: BaseModel | None,
    operation: Callable[[], Awaitable[tuple[Any, bool]]],
) -> Any:
    """Runs `operation` (-> (answer, replayed)) under the deployment-wide key check."""
    fp = fingerprint(request, body)
    redis_key = state.keys.http_idempotency(key)
    previous = await claims(request.app, state.redis).claim(redis_key, fp)
    if previous is not None:
        stored = previous.decode() if isinstance(previous, bytes) else str(previous)
        stored_fp, _, stored_error = stored.partition(_SEP)
        if stored_fp != fp:
            raise Problem(
                422,
                "this Idempotency-Key was used with another request (method, path or body)",
                slug="idempotency-key-reused",
            )
        if stored_error:
            status_text, _, body_text = stored_error.partition(_SEP)
            return JSONResponse(
                json.loads(body_text),
                status_code=int(status_text),
                media_type=MEDIA_TYPE,
                headers={REPLAYED_HEADER: "true"},
            )
    try:
        answer, replayed = await operation()
    except MeterError as exc:
        problem = from_meter_error(exc)
        if problem.status in STORED_ERROR_STATUSES:
            record = _SEP.join((fp, str(problem.status), json.dumps(problem.body())))
            await state.redis.set(redis_key, record, xx=True, keepttl=True)
        elif problem.status == 422:
            await _release(state, redis_key, fp)
        raise problem from exc
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return answer


async def _release(state: AppState, redis_key: str, fp: str) -> None:
    """Frees a claimed key for a corrected retry after a 422 (nothing ran). Deletes it only
    if it still holds exactly this request's fingerprint: a stored answer or another
    request's claim stays. Best effort: with Redis down the claim stays."""
    try:
        await state.redis.eval(_RELEASE_LUA, 1, redis_key, fp)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        log.warning("idempotency key not released: redis unavailable")
