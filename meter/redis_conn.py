"""Redis connections with explicit options: the meter never relies on redis-py defaults.

Both flavours use a blocking pool: when every connection is busy a command waits (at most
POOL_WAIT_S) for one to come back instead of failing at once, so a burst of requests queues
for a moment rather than being refused.
"""

from __future__ import annotations

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

SOCKET_TIMEOUT_S = 5.0  # a script never runs this long; longer means Redis is gone
CONNECT_TIMEOUT_S = 2.0  # loopback or LAN: a slow connect is a dead server
RETRIES = 3  # redis-py re-sends after a timeout; our idempotency keys make that safe (§11.3)
# Per client (so per API process). AsyncMeter sends its scripts in at most 2 pipelines at a
# time; the rest of a request's commands (idempotency claim and record, key replica) take one
# connection for one round trip, and Redis runs one command at a time: more connections only
# add sockets. A burst past 64 commands in flight waits for a free connection.
POOL_CONNECTIONS_MAX = 64
# The longest a command waits for a free connection: a pool busy that long means Redis (or
# the process) is overloaded, and the caller hears it (503) while the client can still retry.
POOL_WAIT_S = 2.0


def _options() -> dict[str, object]:
    return {
        "decode_responses": False,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 30,
        "max_connections": POOL_CONNECTIONS_MAX,
        "timeout": POOL_WAIT_S,
    }


def sync_client(url: str) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.01), RETRIES)
    pool = redis.BlockingConnectionPool.from_url(url, retry=retry, **_options())
    return redis.Redis.from_pool(pool)


def async_client(url: str) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    retry = AsyncRetry(ExponentialBackoff(cap=0.5, base=0.01), RETRIES)
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, retry=retry, **_options())
    return redis.asyncio.Redis.from_pool(pool)
