"""Small shared helpers for the meter tests: meters on a test's own key prefix, a settable
clock, direct script calls, and a snapshot of every key of a prefix."""

from __future__ import annotations

import time
from typing import Any

import redis

from meter import AsyncMeter, Keys, Meter, NewAccountLoader, runner, wire
from meter.loaders import Loader
from meter.redis_conn import async_client, sync_client

# "now" of the test session, whole seconds. Not a fixed past date: scripts set absolute
# expiries (PEXPIREAT) from the clock, and Redis deletes a key whose expiry is in the past.
T0_MS = int(time.time()) * 1000


class Clock:
    """A controllable clock: `clock()` returns now_ms; set or advance it explicitly."""

    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms


_DEFAULT = object()


def _loader(loader: Any) -> Loader | None:
    return NewAccountLoader() if loader is _DEFAULT else loader


def make_meter(
    redis_url: str,
    prefix: str,
    clock: Clock | None = None,
    loader: Any = _DEFAULT,
    buckets: int = 16,
) -> Meter:
    """A sync Meter on Keys(prefix); NewAccountLoader unless `loader` is given (None: none)."""
    return Meter(
        sync_client(redis_url),
        keys=Keys(prefix=prefix, buckets=buckets),
        loader=_loader(loader),
        clock_ms=clock,
    )


def make_async_meter(
    redis_url: str,
    prefix: str,
    clock: Clock | None = None,
    loader: Any = _DEFAULT,
    buckets: int = 16,
) -> AsyncMeter:
    """An AsyncMeter on Keys(prefix); close it with `await m.aclose()`."""
    return AsyncMeter(
        async_client(redis_url),
        keys=Keys(prefix=prefix, buckets=buckets),
        loader=_loader(loader),
        clock_ms=clock,
    )


def evalsha(r: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    """Runs the registered script `name` directly, as the clients do (meter.runner)."""
    return runner.run(r, name, keys, args)


def _content(r: redis.Redis, key: bytes) -> tuple[str, Any]:
    kind = r.type(key).decode()
    if kind == "string":
        value: Any = r.get(key)
    elif kind == "hash":
        value = r.hgetall(key)
    elif kind == "zset":
        value = r.zrange(key, 0, -1, withscores=True)
    elif kind == "set":
        value = sorted(r.smembers(key))
    elif kind == "list":
        value = r.lrange(key, 0, -1)
    elif kind == "stream":
        value = r.xrange(key)
    else:
        value = None
    return kind, value


def snapshot(r: redis.Redis, prefix: str) -> dict[bytes, tuple[str, Any, bool]]:
    """Every key under `prefix`: (type, content, has a TTL). Equal snapshots: nothing changed.
    SCANs the whole keyspace: on a big shared Redis prefer snapshot_keys."""
    out = {}
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        kind, value = _content(r, key)
        out[key] = (kind, value, r.pttl(key) >= 0)
    return out


def snapshot_keys(r: redis.Redis, keys: set[str]) -> dict[str, tuple[bytes | None, bool]]:
    """DUMP and has-a-TTL of the given keys (None for a missing key), in one round trip.
    Scripts touch only their declared KEYS, so the keys ever passed to them are enough."""
    pipe = r.pipeline(transaction=False)
    ordered = sorted(keys)
    for key in ordered:
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute()
    return {key: (replies[2 * i], replies[2 * i + 1] >= 0) for i, key in enumerate(ordered)}


def journal_entries(r: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """A journal stream's entries as XRANGE reads them, with a packed charge's fields spread
    into their names (meter.wire.unpack_charge): tests read every entry alike."""
    out = []
    for sid, fields in r.xrange(key):
        text = wire.unpack_charge({k.decode(): v.decode() for k, v in fields.items()})
        out.append((sid, {k.encode(): v.encode() for k, v in text.items()}))
    return out
