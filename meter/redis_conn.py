"""Redis connections with explicit options: the meter never relies on redis-py defaults."""

from __future__ import annotations

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

SOCKET_TIMEOUT_S = 5.0  # a script never runs this long; longer means Redis is gone
CONNECT_TIMEOUT_S = 2.0  # loopback or LAN: a slow connect is a dead server
RETRIES = 3  # redis-py re-sends after a timeout; our idempotency keys make that safe (§11.3)


def _options() -> dict[str, object]:
    return {
        "decode_responses": False,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 30,
    }


def sync_client(url: str) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.01), RETRIES)
    return redis.Redis.from_url(url, retry=retry, **_options())


def async_client(url: str) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    retry = AsyncRetry(ExponentialBackoff(cap=0.5, base=0.01), RETRIES)
    return redis.asyncio.Redis.from_url(url, retry=retry, **_options())  # type: ignore[arg-type]
