"""Redis connections with explicit options: the meter never relies on redis-py defaults.

Both flavours use a blocking pool: when every connection is busy a command waits (at most
POOL_WAIT_S) for one to come back instead of failing at once, so a burst of requests queues
for a moment rather than being refused.

A Redis Cluster is named by its URL alone: redis+cluster://host:port (rediss+cluster:// with
TLS) of any one node builds a RedisCluster, which discovers the others and sends each command
to the master of its key's slot. Every meter key carries its bucket's hash tag (meter/keys.py),
so each script call is one slot, and NOSCRIPT is answered, and EVAL resent, on that slot's node.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode
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
# URL scheme of a cluster -> the scheme redis-py parses (it takes the node's address from it).
CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}


def _options() -> dict[str, object]:
    return {
        "decode_responses": False,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 30,
        "max_connections": POOL_CONNECTIONS_MAX,
        "timeout": POOL_WAIT_S,
    }


def cluster_node_url(url: str) -> str | None:
    """The plain URL of the node a cluster URL names, or None when url names no cluster."""
    for scheme, plain in CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return plain + url[len(scheme) :]
    return None


def _cluster_options() -> dict[str, Any]:
    # A cluster client keeps a pool per node (max_connections each); redis-py has no
    # blocking pool for it, so a burst past that fails instead of waiting POOL_WAIT_S.
    options = _options()
    del options["timeout"]
    return options


def sync_client(url: str) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.01), RETRIES)
    node_url = cluster_node_url(url)
    if node_url is not None:
        cluster = redis.RedisCluster.from_url(node_url, retry=retry, **_cluster_options())
        # Typed as redis.Redis for the callers: the meter sends only commands of one key (or
        # one slot's keys), which RedisCluster takes as redis.Redis does (tests/cluster/).
        return cast(redis.Redis, cluster)
    pool = redis.BlockingConnectionPool.from_url(url, retry=retry, **_options())
    return redis.Redis.from_pool(pool)


def async_client(url: str) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    retry = AsyncRetry(ExponentialBackoff(cap=0.5, base=0.01), RETRIES)
    node_url = cluster_node_url(url)
    if node_url is not None:
        options = _cluster_options()
        cluster = redis.asyncio.RedisCluster.from_url(node_url, retry=retry, **options)
        return cast(redis.asyncio.Redis, cluster)
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, retry=retry, **_options())
    return redis.asyncio.Redis.from_pool(pool)


def _as_cluster(client: object) -> redis.RedisCluster | None:
    return client if isinstance(client, redis.RedisCluster) else None


def is_cluster(client: redis.Redis) -> bool:
    """Whether a command over keys of several buckets must be split (one slot per command)."""
    return _as_cluster(client) is not None


def primaries(client: redis.Redis) -> list[redis.Redis]:
    """A client of each master: the client itself, or one per master of a cluster (for
    commands about a server rather than a key, such as CONFIG GET)."""
    cluster = _as_cluster(client)
    if cluster is None:
        return [client]
    nodes = cluster.get_primaries()  # type: ignore[no-untyped-call]
    return [n for n in (cluster.get_redis_connection(node) for node in nodes) if n is not None]


# Connection options a text twin takes over from its cluster client (redis-py also keeps
# its own callbacks there, which belong to that client).
_TWIN_OPTIONS = ("socket_timeout", "socket_connect_timeout", "max_connections", "retry")


def text_twin(client: redis.Redis) -> redis.Redis:
    """A client of the same server (or cluster) that decodes replies to str; close() it."""
    cluster = _as_cluster(client)
    if cluster is None:
        kwargs = {**client.connection_pool.connection_kwargs, "decode_responses": True}
        return redis.Redis.from_pool(redis.ConnectionPool(**kwargs))
    options = cluster.nodes_manager.connection_kwargs
    kept = {k: options[k] for k in _TWIN_OPTIONS if k in options}
    masters = cluster.get_primaries()  # type: ignore[no-untyped-call]
    nodes = [ClusterNode(n.host, n.port) for n in masters]  # type: ignore[no-untyped-call]
    twin = redis.RedisCluster(startup_nodes=nodes, decode_responses=True, **kept)
    return cast(redis.Redis, twin)


async def discover(client: redis.asyncio.Redis) -> None:
    """Learns a cluster's slot map unless the client has already (a no-op on one Redis).
    A cluster pub/sub picks its node from that map; a PUBLISH reaches every node, so the
    node of the first channel serves every channel."""
    cluster = client if isinstance(client, redis.asyncio.RedisCluster) else None
    if cluster is not None:
        await cluster.initialize()
