"""What every request handler shares, built once per API process in the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis.asyncio
from fastapi import Request
from redis import Redis as SyncRedis
from sqlalchemy import Engine

from meter import AsyncMeter
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.queues import sync_status_with_queues
from sync.settings import Settings
from sync.status import SyncStatus


@dataclass
class AppState:
    settings: Settings
    keys: Keys
    redis_url: str  # for the sync clients of admin reads (status) run in a thread
    redis: redis.asyncio.Redis  # the balance Redis (also pub/sub and auth-failure counters)
    meter: AsyncMeter  # hydrates missing wallets from `engine`
    engine: Engine  # sync SQLAlchemy engine; call it from a thread (run_in_threadpool)
    secret_key: bytes  # signs account tokens, keys API-key hashes
    # A sync client of the balance Redis for work run in threads (key replica resync, status,
    # /readyz and /metrics journal figures): made on first use, then shared (thread-safe pool).
    _sync_redis: SyncRedis | None = field(default=None, repr=False)

    def sync_redis(self) -> SyncRedis:
        if self._sync_redis is None:
            self._sync_redis = sync_client(self.redis_url)
        return self._sync_redis

    def close_sync_redis(self) -> None:
        if self._sync_redis is not None:
            self._sync_redis.close()
            self._sync_redis = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cm
    return state


async def app_state(request: Request) -> AppState:
    """get_state as a route dependency: async, because FastAPI runs a sync dependency in a
    thread pool, a thread hop per request on the charge path."""
    return get_state(request)


@contextlib.contextmanager
def queue_redis(state: AppState) -> Iterator[SyncRedis]:
    """A sync client of the Redis holding the RQ queues (the balance Redis unless
    CREDITMETER_QUEUE_REDIS_URL names another): blocking, use it from a thread."""
    queue_url = state.settings.effective_queue_redis_url() or state.redis_url
    if queue_url == state.redis_url:
        yield state.sync_redis()
        return
    client = sync_client(queue_url)
    try:
        yield client
    finally:
        client.close()


def read_sync_status(state: AppState) -> SyncStatus:
    """The sync's health with the RQ queues' depths (blocking: call it from a thread)."""
    with queue_redis(state) as queue_client:
        return sync_status_with_queues(queue_client, state.sync_redis(), state.engine, state.keys)
