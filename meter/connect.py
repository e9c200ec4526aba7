"""From settings to a checked Redis: the configured URL, or the embedded server started once
per process with its data under data_dir. Every connection is checked for noeviction."""

from __future__ import annotations

from meter.embedded import EmbeddedRedis, check_noeviction
from meter.keys import Keys
from meter.redis_conn import primaries, sync_client
from meter.settings import MeterSettings

_embedded: dict[str, EmbeddedRedis] = {}


def redis_url(settings: MeterSettings) -> str:
    """CREDITMETER_REDIS_URL, or the URL of a private embedded server (AOF everysec)."""
    if settings.redis_url:
        return settings.redis_url
    data_dir = settings.data_dir / "redis"
    server = _embedded.get(str(data_dir))
    if server is None:
        server = EmbeddedRedis(data_dir, appendonly=True)
        _embedded[str(data_dir)] = server
    return server.start()


def checked_redis_url(settings: MeterSettings) -> str:
    """redis_url(), after refusing a server (or any master of a cluster) that may evict
    balances."""
    url = redis_url(settings)
    client = sync_client(url)
    try:
        for server in primaries(client):
            check_noeviction(server)
    finally:
        client.close()
    return url


def keys_from(settings: MeterSettings) -> Keys:
    return Keys(prefix=settings.key_prefix, buckets=settings.buckets)
