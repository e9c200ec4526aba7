"""The cluster tests: one private 3-master Redis Cluster for the session
(bench/cluster_server.py) in place of the single Redis of the other tests, reached only
through meter.redis_conn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from bench.cluster_server import PrivateCluster
from meter.embedded import EmbeddedRedis
from meter.redis_conn import async_client, sync_client


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis+cluster:// URL of the session's private cluster."""
    with PrivateCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def queue_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain Redis for RQ's queues, which do not run on a cluster (sync/settings.py)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("queues"), appendonly=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    client = sync_client(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def redis_async(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = async_client(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
