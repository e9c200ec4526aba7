"""Fixtures of the sync tests: the SQL under test migrated once, a meter that hydrates from
it, and a flusher, all on the test's own key prefix (tests share Redis and SQL)."""

from __future__ import annotations

import uuid

import pytest
import redis
from sqlalchemy import Engine

from meter import Meter, Tool
from meter.keys import Keys
from sync.flush import Flusher
from sync.loader import SqlLoader


@pytest.fixture
def tool(engine: Engine, key_prefix: str) -> Tool:
    """A priced tool saved in SQL (catalog restores read it), unique to the test."""
    from sync.catalog import save_tools

    t = Tool(f"T{key_prefix.upper()}", 3, "credits")
    save_tools(engine, [t])
    return t


@pytest.fixture
def meter(client: redis.Redis, engine: Engine, keys: Keys, tool: Tool) -> Meter:
    m = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    m.set_tools([tool])
    return m


@pytest.fixture
def flusher(client: redis.Redis, engine: Engine, keys: Keys) -> Flusher:
    return Flusher(client, engine, keys)


def account(prefix: str = "acct") -> str:
    """An account id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
