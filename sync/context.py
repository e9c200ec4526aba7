"""Everything a sync job needs, built from settings once per process (and again after fork)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from redis import Redis
from sqlalchemy import Engine

from meter import Meter
from meter.connect import checked_redis_url, keys_from
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.settings import Settings, get_settings


@dataclass
class SyncContext:
    settings: Settings
    redis: Redis
    queue_redis: Redis
    engine: Engine
    keys: Keys

    def meter(self) -> Meter:
        """A sync meter that hydrates from this SQL."""
        return Meter(self.redis, keys=self.keys, loader=SqlLoader(self.engine, self.keys))


_contexts: dict[int, SyncContext] = {}


def context(settings: Settings | None = None) -> SyncContext:
    pid = os.getpid()
    ctx = _contexts.get(pid)
    if ctx is None or (settings is not None and settings is not ctx.settings):
        settings = settings or get_settings()
        url = checked_redis_url(settings)
        client = sync_client(url)
        queue_url = settings.effective_queue_redis_url() or url
        ctx = SyncContext(
            settings=settings,
            redis=client,
            queue_redis=client if queue_url == url else sync_client(queue_url),
            engine=engine_for(settings.database_url),
            keys=keys_from(settings),
        )
        _contexts[pid] = ctx
    return ctx
