"""Shared by the Redis fault tests of the worker: a private Redis that can be SIGKILLed and
started again on the same port and data dir, a charger that times each acknowledgement,
and where the worker's trigger child is."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import redis
from sqlalchemy import Engine, select

from meter import Meter
from meter.embedded import EmbeddedRedis, free_port
from meter.keys import Keys
from sync.models import T_LEDGER
from tests.servers import sigkill_redis
from tests.sync.faults.test_worker_kills import _children_map

TRIGGER_COMM = "creditmeter-trigger"[:15]  # Linux keeps 15 bytes of a process name
ERROR_PAUSE_S = 0.01  # a refused charge is retried after this: no busy loop while Redis is down


class RestartableRedis:
    """A redis-server (AOF everysec) on a fixed port: kill() and start() again keep both the
    address every client knows and the data dir it replays its append-only file from."""

    def __init__(self, data_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir, self.port, self.extra_args = data_dir, free_port(), extra_args
        self.server = self._new()

    def _new(self) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir, port=self.port, extra_args=self.extra_args)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        """Starts the server; returns the monotonic time it answered PING."""
        self.server.start()
        return time.monotonic()

    def kill(self) -> None:
        sigkill_redis(self.server)
        self.server = self._new()

    def stop(self) -> None:
        self.server.stop()


class TimedCharger(threading.Thread):
    """Charges round-robin until stopped (or `limit` charges), keeping each acknowledged id
    with the monotonic time of its acknowledgement, and every refusal."""

    def __init__(self, meter: Meter, accounts: list[str], tool: str, limit: int = 0) -> None:
        super().__init__(daemon=True)
        self.meter, self.accounts, self.tool, self.limit = meter, accounts, tool, limit
        self.acked: list[tuple[str, float]] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._stop_event.is_set() and (not self.limit or i < self.limit):
            try:
                c = self.meter.charge(self.accounts[i % len(self.accounts)], self.tool)
                self.acked.append((c.id, time.monotonic()))
                i += 1
            except Exception as exc:
                self.errors.append(type(exc).__name__)
                time.sleep(ERROR_PAUSE_S)

    def ids(self, since_s: float = 0.0) -> list[str]:
        return [i for i, t in self.acked if t >= since_s]

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:
            self.join(timeout=30)
        assert not self.is_alive(), "charger did not stop"


def flushed_ids(engine: Engine, keys: Keys) -> set[str]:
    """Ledger ids of the test's accounts that the flush wrote (welcome grants excluded)."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(T_LEDGER.c.id).where(
                    T_LEDGER.c.account_id.like(f"{keys.prefix}-%"), T_LEDGER.c.stream_id != ""
                )
            ).scalars()
        )


def wait_flushed(engine: Engine, keys: Keys, ids: list[str], timeout_s: float) -> float | None:
    """Seconds until every id is in SQL; None past the timeout."""
    start = time.monotonic()
    want = set(ids)
    while time.monotonic() - start < timeout_s:
        if want <= flushed_ids(engine, keys):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def first_flushed_at(
    engine: Engine, keys: Keys, charger: TimedCharger, since_s: float, timeout_s: float
) -> float | None:
    """Monotonic time the first charge acknowledged after since_s showed up in SQL."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = set(charger.ids(since_s))
        if new and new & flushed_ids(engine, keys):
            return time.monotonic()
        time.sleep(0.02)
    return None


def trigger_children(worker_pid: int) -> list[int]:
    """Pids of the worker's trigger child (by its process name), normally exactly one."""
    out = []
    for pid in _children_map().get(worker_pid, []):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == TRIGGER_COMM:
                out.append(pid)
    return out


def redis_alive(client: redis.Redis) -> bool:
    with contextlib.suppress(redis.RedisError):
        return bool(client.ping())
    return False
