"""Shared fixtures: real Redis and real SQL (migrated once), never mocks.

Redis: TEST_REDIS_URL if set, else a private embedded server for the session.
SQL: a new database of its own on the PostgreSQL server of TEST_DATABASE_URL if set (CI),
else a SQLite file in a tmp dir.
Tests isolate by key prefix, never by FLUSHALL/FLUSHDB, so a shared Redis is safe.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from sqlalchemy import Engine

from meter.embedded import EmbeddedRedis
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.db import engine_for
from sync.migrate import upgrade
from tests.sql_databases import is_postgres, throwaway_database

SOCKET_TIMEOUT_S = 5  # a hung server fails the test quickly instead of at the 120 s timeout


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the Redis under test; starts an embedded one when TEST_REDIS_URL is unset."""
    env_url = os.environ.get("TEST_REDIS_URL")
    if env_url:
        yield env_url
        return
    # No AOF: the suite's data is throwaway and fsync would only slow it down.
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client with bytes replies and explicit timeouts."""
    client = redis.Redis.from_url(
        redis_url,
        decode_responses=False,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def redis_async(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client with bytes replies and explicit timeouts."""
    client = redis.asyncio.Redis.from_url(
        redis_url,
        decode_responses=False,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of the SQL under test: a throwaway database on the PostgreSQL server of
    TEST_DATABASE_URL, else a fresh SQLite file."""
    env_url = os.environ.get("TEST_DATABASE_URL")
    if env_url:
        assert is_postgres(env_url), f"TEST_DATABASE_URL names no PostgreSQL: {env_url}"
        with throwaway_database(env_url, "test") as url:
            yield url
        return
    db_path: Path = tmp_path_factory.mktemp("sql") / "creditmeter.db"
    yield f"sqlite:///{db_path}"


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix unique to this test, so tests never collide on a shared Redis."""
    return "t" + uuid.uuid4().hex[:10]


TEST_BUCKETS = 4  # few buckets: every test touches several accounts per bucket


@pytest.fixture(scope="session")
def sql_url(database_url: str) -> str:
    upgrade(database_url)
    return database_url


@pytest.fixture
def engine(sql_url: str) -> Engine:
    return engine_for(sql_url)


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(prefix=key_prefix, buckets=TEST_BUCKETS)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = sync_client(redis_url)
    try:
        yield c
    finally:
        c.close()
