"""Who is calling: API keys with scopes, and account tokens, as FastAPI dependencies.

- `require(scope)` (aliases `ReadKey`, `MeterKey`, `AdminKey`): an API key as
  `Authorization: Bearer <key>` whose scope implies `scope` (`admin` > `meter` > `read`;
  `meter` implies `read`, see sync/apikeys.py).
- `account_reader` (alias `AccountReader`), for GET /v1/accounts/{account_id}/balance and
  /events: a key with `read` scope, or an account token (api/tokens.py) for exactly the
  account in the path, as Bearer or as `?token=` (a browser's EventSource cannot set
  headers). `?token=` takes account tokens only: API keys do not belong in URLs and logs.

Answers:
- 401 `unauthorized` + `WWW-Authenticate: Bearer`: credentials missing, malformed, unknown,
  revoked or expired.
- 403 `forbidden`: the caller is authenticated but not allowed: a key of a lesser scope, an
  account token on a route that needs a key (the token is valid, it just does not reach that
  far), a token of another account. A 403 does not count as a failed authentication.
- 429 `too-many-requests` + `Retry-After`: every 401 counts against the client address (a
  Redis counter, `Keys.auth_failures`, living AUTH_FAILURE_WINDOW_S from the first failure).
  Past AUTH_FAILURES_MAX failures in that window, a request of that client that fails
  authentication gets 429 instead of 401 until the window ends; a request that authenticates
  still passes, so one misconfigured script does not lock out a good service behind the same
  NAT address. (Keys hold 250 secret bits and tokens a 256-bit HMAC: the limit is against
  load and noise, not guessing.) If Redis cannot count, authentication still answers 401.
  The client address is the connection's peer: behind a proxy, run uvicorn with
  `--proxy-headers` and the proxy in `--forwarded-allow-ips`.

How a key is verified, without SQL on the charge path (so charging goes on through a SQL
outage of any length):
1. this process's cache, by the key's keyed hash (never the key), for KEY_CACHE_TTL_S;
2. one HMGET on the replica of live keys in the balance Redis (sync/apikeys.py), which also
   reads the replica's completeness mark (REPLICA_SYNCED_FIELD);
3. only when the replica does not hold the hash: SQL (bounded by KEY_SQL_TIMEOUT_S), and a
   live key found there is copied to the replica. When SQL fails, the process skips it for
   SQL_DOWN_RETRY_S and answers from the replica alone: a complete replica (it carries the
   mark) that lacks the hash means the key is unknown or revoked, 401; a replica without the
   mark (Redis restarted empty or lost it) cannot tell a live key from an unknown one, so the
   answer is 503 `database-unavailable` until SQL answers or a resync reloads it. (After such
   a restart the wallets are gone from Redis too and reloading them needs SQL, so charging
   could not go on anyway; nothing is lost, the requests are refused, not applied.)

A revocation deletes the replica entry (sync/apikeys.revoke_key), so it takes effect within
KEY_CACHE_TTL_S in every process. Each process resyncs the replica from SQL at its first
authenticated request and then every KEY_RESYNC_INTERVAL_S while SQL answers (a background
task, never on the request's time), which also repairs a replica that missed a write. Last
use (`last_used_at_ms`) is noted in memory and written by that same task, best effort: a
request never fails or waits because SQL is down. Keys and tokens are never logged, only a
known key's prefix.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Final, NoReturn

import redis.exceptions
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api import access_log
from api.errors import Problem
from api.state import AppState, get_state
from api.tokens import is_token, verify_token
from meter.times import now_ms as wall_ms
from sync.apikeys import (
    KEY_RESYNC_INTERVAL_S,
    REPLICA_SYNCED_FIELD,
    SCOPES,
    KeyReplica,
    ReplicaBusy,
    ReplicatedKey,
    key_hash,
    looks_like_key,
    parse_replica_value,
    record_last_use,
    replica_value,
    resync_replica,
    scope_allows,
    verify_key,
)

log = logging.getLogger("creditmeter.auth")

KEY_CACHE_TTL_S: Final = 5.0  # No SQL query per charge; a revocation bites within 5 s.
KEY_CACHE_ENTRIES_MAX: Final = 10_000  # Live keys seen within one TTL; past it, start over.
# Best-effort writes (failure counters, the key copy) give up on these: never fail a request.
REDIS_CANNOT_WRITE: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
)
AUTH_FAILURES_MAX: Final = 20  # 401s per client per window before 429: typos, not scans.
AUTH_FAILURE_WINDOW_S: Final = 60  # Counted from the first failure; also the longest block.
TOKEN_SCOPE: Final = "account"  # Principal.scope of an account token.
UNKNOWN_CLIENT: Final = "unknown"  # No peer address (some test transports).
KEY_SQL_TIMEOUT_S: Final = 2.0  # A replica miss waits this long for SQL, then answers without.
SQL_DOWN_RETRY_S: Final = 1.0  # After SQL failed, misses skip it this long: answers stay fast.

bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`cm_live_...`) or, on an account's balance and events, "
    "that account's token (`cmt_...`).",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: an API key (account_id None) or an account token (key_id,
    key_prefix None; scope TOKEN_SCOPE)."""

    key_id: str | None
    key_prefix: str | None
    scope: str
    account_id: str | None = None

    @property
    def actor(self) -> str:
        """Who did it, for the audit log: the key's id (never the key)."""
        return self.key_id or f"token:{self.account_id}"


@dataclass
class _KeyCache:
    ttl_s: float = KEY_CACHE_TTL_S
    entries: dict[str, tuple[float, ReplicatedKey]] = field(default_factory=dict)

    def get(self, digest: str, now: float) -> ReplicatedKey | None:
        hit = self.entries.get(digest)
        if hit is None or hit[0] <= now:
            return None
        return hit[1]

    def put(self, digest: str, info: ReplicatedKey, now: float) -> None:
        if len(self.entries) >= KEY_CACHE_ENTRIES_MAX:
            self.entries.clear()
        self.entries[digest] = (now + self.ttl_s, info)


def _cache(app: FastAPI) -> _KeyCache:
    cache: _KeyCache | None = getattr(app.state, "auth_key_cache", None)
    if cache is None:
        cache = app.state.auth_key_cache = _KeyCache()
    return cache


def forget_cached_keys(app: FastAPI) -> None:
    """Drops this process's verified keys (after a revocation made in this process)."""
    _cache(app).entries.clear()


@dataclass
class _ReplicaUpkeep:
    """Per process: when the replica is next resynced, whether SQL just failed, and the key
    uses not yet written to SQL."""

    resync_due_at: float = 0.0  # monotonic; 0: at the first authenticated request
    task: asyncio.Task[None] | None = None
    sql_down_until: float = 0.0  # monotonic
    sql_down: bool = False  # what the last resync found, to log the change once
    uses_ms: dict[str, int] = field(default_factory=dict)  # key id -> last use (wall ms)


def _upkeep(app: FastAPI) -> _ReplicaUpkeep:
    upkeep: _ReplicaUpkeep | None = getattr(app.state, "auth_replica_upkeep", None)
    if upkeep is None:
        upkeep = app.state.auth_replica_upkeep = _ReplicaUpkeep()
    return upkeep


def _key_replica(state: AppState) -> KeyReplica:
    return KeyReplica(state.sync_redis(), state.keys)


def resync_now(state: AppState, upkeep_of: FastAPI) -> None:
    """One resync of the replica plus the pending last-use writes (blocking: run it in a
    thread). Failures are logged, never raised: the next round tries again."""
    upkeep = _upkeep(upkeep_of)
    try:
        result = resync_replica(state.engine, _key_replica(state))
    except SQLAlchemyError as exc:
        if not upkeep.sql_down:
            log.warning("key replica not resynced: SQL unavailable (%s)", type(exc).__name__)
        upkeep.sql_down = True
        return
    except redis.exceptions.RedisError as exc:
        log.warning("key replica not resynced: Redis unavailable (%s)", type(exc).__name__)
        return
    except ReplicaBusy as exc:
        log.info("key replica not resynced this round: %s", exc)
        return
    if upkeep.sql_down or result.added or result.removed:
        log.info(
            "key replica resynced: %s live, %s added, %s removed",
            result.live,
            result.added,
            result.removed,
        )
    upkeep.sql_down = False
    uses, upkeep.uses_ms = upkeep.uses_ms, {}
    try:
        record_last_use(state.engine, uses)
    except SQLAlchemyError as exc:
        log.info("key last use not recorded (%s); retried next round", type(exc).__name__)
        for key_id, at in uses.items():
            upkeep.uses_ms[key_id] = max(at, upkeep.uses_ms.get(key_id, 0))


async def _resync_in_background(state: AppState, app: FastAPI) -> None:
    try:
        await run_in_threadpool(resync_now, state, app)
    except Exception:  # a bug here must not end the process's resyncs
        log.exception("key replica resync failed")


def _keep_replica(state: AppState, app: FastAPI) -> None:
    """Starts a resync when one is due and none runs; never waits for it."""
    upkeep = _upkeep(app)
    now = time.monotonic()
    if now < upkeep.resync_due_at or (upkeep.task is not None and not upkeep.task.done()):
        return
    upkeep.resync_due_at = now + KEY_RESYNC_INTERVAL_S
    upkeep.task = asyncio.create_task(_resync_in_background(state, app))


def _client(request: Request) -> str:
    return request.client.host if request.client else UNKNOWN_CLIENT


async def count_failure(state: AppState, request: Request, detail: str) -> None:
    """Counts one failed authentication of the client; raises 429 once it has failed more
    than AUTH_FAILURES_MAX times in the window (also used by the dashboard's login)."""
    client = _client(request)
    name = state.keys.auth_failures(client)
    try:
        async with state.redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, AUTH_FAILURE_WINDOW_S, nx=True)
            pipe.ttl(name)
            failures, _, ttl_s = await pipe.execute()
    except REDIS_CANNOT_WRITE as exc:
        log.warning("auth failure not counted (redis: %s)", type(exc).__name__)
        failures, ttl_s = 0, 0
    log.info("authentication failed: client=%s failures=%s (%s)", client, failures, detail)
    if failures > AUTH_FAILURES_MAX:
        if failures == AUTH_FAILURES_MAX + 1:
            log.warning("client %s blocked for %s s after failed authentications", client, ttl_s)
        raise Problem(
            429,
            "too many failed authentications from this client; retry later",
            headers={"Retry-After": str(max(1, ttl_s))},
        )


async def _reject(state: AppState, request: Request, detail: str) -> NoReturn:
    """401, or 429 once the client has failed more than AUTH_FAILURES_MAX times."""
    await count_failure(state, request, detail)
    raise Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def _key(state: AppState, request: Request, presented: str) -> Principal | None:
    """The principal of a live API key, from the cache, the replica or SQL; None for anything
    else. Raises 503 when neither the replica nor SQL can tell."""
    if not looks_like_key(presented):
        return None
    app = request.app
    _keep_replica(state, app)
    digest = key_hash(state.secret_key, presented)
    cache = _cache(app)
    info = cache.get(digest, time.monotonic())
    if info is None:
        info = await _verified(state, app, digest, presented)
        if info is None:
            return None
        cache.put(digest, info, time.monotonic())
    _upkeep(app).uses_ms[info.id] = wall_ms()
    access_log.note_key(request, info.id)
    return Principal(key_id=info.id, key_prefix=info.prefix, scope=info.scope)


async def _verified(
    state: AppState, app: FastAPI, digest: str, presented: str
) -> ReplicatedKey | None:
    """Not cached: the replica, then SQL only for a hash the replica does not hold."""
    name = state.keys.api_keys()
    try:
        raw, synced = await state.redis.hmget(name, [digest, REPLICA_SYNCED_FIELD])
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("key replica unreadable (redis: %s); asking SQL", type(exc).__name__)
        raw = synced = None
    entry = parse_replica_value(raw) if raw is not None else None
    if entry is not None:
        return entry
    upkeep = _upkeep(app)
    if time.monotonic() < upkeep.sql_down_until:
        _refuse_unless_complete(synced)
        return None
    try:
        # asyncio's thread, not anyio's: a timed-out wait returns, the query runs on alone.
        info = await asyncio.wait_for(
            asyncio.to_thread(
                verify_key, state.engine, state.secret_key, presented, record_use=False
            ),
            KEY_SQL_TIMEOUT_S,
        )
    except (SQLAlchemyError, TimeoutError) as exc:
        log.warning("API key not in the replica and SQL unavailable (%s)", type(exc).__name__)
        upkeep.sql_down_until = time.monotonic() + SQL_DOWN_RETRY_S
        _refuse_unless_complete(synced)
        return None
    if info is None:
        return None
    try:  # a key made while Redis was unreachable, or a replica that lost it
        await state.redis.hset(name, digest, replica_value(info.id, info.prefix, info.scope))
    except REDIS_CANNOT_WRITE:
        log.info("key %s not copied to the replica: redis unavailable or full", info.prefix)
    return ReplicatedKey(info.id, info.prefix, info.scope)


def _refuse_unless_complete(synced: object) -> None:
    """A replica miss while SQL is down means an unknown key only if the replica is complete
    (its mark was read with the miss); else 503: the key may well be live."""
    if synced is not None:
        return
    raise Problem(
        503,
        "API keys cannot be verified: the database is unavailable and the key replica in "
        "Redis is not loaded",
        slug="database-unavailable",
        headers={"Retry-After": str(int(KEY_RESYNC_INTERVAL_S))},
    )


def _check_scope(principal: Principal, scope: str) -> Principal:
    if not scope_allows(principal.scope, scope):
        raise Problem(
            403,
            f"this route needs a key with scope {scope}; key {principal.key_prefix} "
            f"has scope {principal.scope}",
            required_scope=scope,
        )
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting API keys whose scope implies `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        state = get_state(request)
        if credentials is None:
            await _reject(state, request, "missing API key: send Authorization: Bearer <key>")
        presented = credentials.credentials
        if is_token(presented):
            if verify_token(state.secret_key, presented, wall_ms()) is None:
                await _reject(state, request, "invalid or expired account token")
            raise Problem(
                403,
                "an account token only reads its own account's balance and events; "
                "this route needs an API key",
                required_scope=scope,
            )
        principal = await _key(state, request, presented)
        if principal is None:
            await _reject(state, request, "invalid or revoked API key")
        return _check_scope(principal, scope)

    return dependency


async def account_reader(
    request: Request,
    account_id: Annotated[str, Path()],
    credentials: Credentials,
    token: Annotated[
        str | None,
        Query(description="this account's token, for clients that cannot set headers"),
    ] = None,
) -> Principal:
    """A key with read scope, or the path account's own token (Bearer or ?token=)."""
    state = get_state(request)
    presented = credentials.credentials if credentials else token
    if presented is None:
        await _reject(state, request, "missing credentials: an API key or this account's token")
    if is_token(presented):
        owner = verify_token(state.secret_key, presented, wall_ms())
        if owner is None:
            await _reject(state, request, "invalid or expired account token")
        if owner != account_id:
            raise Problem(403, "this account token reads another account")
        access_log.note_account(request, owner)
        return Principal(key_id=None, key_prefix=None, scope=TOKEN_SCOPE, account_id=owner)
    if credentials is None:
        await _reject(state, request, "?token= takes account tokens only; send API keys as Bearer")
    principal = await _key(state, request, presented)
    if principal is None:
        await _reject(state, request, "invalid or revoked API key")
    return _check_scope(principal, "read")


ReadKey = Annotated[Principal, Depends(require("read"))]
MeterKey = Annotated[Principal, Depends(require("meter"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
AccountReader = Annotated[Principal, Depends(account_reader)]
