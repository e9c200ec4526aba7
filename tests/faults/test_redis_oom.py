"""Issue 12 item 6: Redis out of memory (maxmemory reached, policy noeviction) is a 503
problem+json with Retry-After on every route, never a 500 or a dropped connection, and
/readyz is 503 naming Redis memory; the worker (its rq loop, rq's scheduler and the
trigger) lives through it; nothing is half applied; once memory is freed, charging and
flushing resume.

Its own redis-server, a real `creditmeter api` and `creditmeter worker`. The Lua scripts
check before they write and Redis refuses only a script's first write when out of memory,
so a refused call changed nothing: after the drain SQL == Redis per wallet, and each
refused request retried with its Idempotency-Key is applied once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue
from rq.job import JobStatus

from meter import Tool
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.apikeys import create_key
from sync.catalog import save_tools
from sync.db import engine_for
from sync.queues import SWEEP_JOB, SYNC, queue_name
from tests.api.server import running_api, server_env
from tests.faults.worker_faults import RestartableRedis, flushed_ids, wait_flushed
from tests.sync.faults.test_worker_kills import (
    Workers,
    assert_exactly_once,
    forget_dead_locks,
    wait_drained,
    wait_until,
)
from tests.sync.invariants import assert_in_sync

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

BUCKETS = 4
ACCOUNTS = 8
HTTP_TIMEOUT_S = 15.0
CLIENT_THREADS = 8  # concurrent HTTP clients while Redis is full
REFUSED_PER_THREAD = 25
FILLER_CHUNK_BYTES = 256 * 1024
HEADROOM_BYTES = 2 * 1024 * 1024  # maxmemory is set this far above the memory in use
FULL_S = 6.0  # Redis stays full at least this long: past cron ticks and a heartbeat
RESUME_S_MAX = 10.0  # after memory is freed, charges flush within this
SCHEDULED_JOB_S_MAX = 15.0  # rq's scheduler moves a due job within this once Redis has room
DRAIN_TIMEOUT_S = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableRedis]:
    s = RestartableRedis(tmp_path / "redis")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _fill(client: redis.Redis, prefix: str) -> int:
    """Sets maxmemory just above what is used and writes filler until Redis refuses; then
    lowers maxmemory below the filled level, so that freed client buffers cannot make room
    for a write again while the test expects none."""
    client.config_set("maxmemory", str(_used(client) + HEADROOM_BYTES))
    filler = b"x" * FILLER_CHUNK_BYTES
    for i in range(10 * HEADROOM_BYTES // FILLER_CHUNK_BYTES):
        try:
            client.set(f"{prefix}:filler:{i}", filler)
        except redis.exceptions.OutOfMemoryError:
            _hold_full(client, prefix)
            return i
    raise AssertionError("Redis never ran out of memory")


def _hold_full(client: redis.Redis, prefix: str) -> None:
    """Lowers maxmemory to half the memory Redis counts against it: buffers that drain
    soon (the append-only file's, the clients') are in used_memory, and the filler alone
    then keeps Redis over the limit."""
    info = client.info("memory")
    counted = int(info["used_memory"]) - int(info.get("mem_not_counted_for_evict", 0))
    client.config_set("maxmemory", str(counted // 2))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set(f"{prefix}:probe", b"x")


def _free(client: redis.Redis, prefix: str, chunks: int) -> None:
    client.delete(*[f"{prefix}:filler:{i}" for i in range(chunks)])
    client.config_set("maxmemory", "0")


class HttpLoad(threading.Thread):
    """Posts charges, each with its own Idempotency-Key; keeps every answer (or the
    transport error in its place)."""

    def __init__(self, base: str, auth: dict[str, str], bodies: list[tuple[str, dict]]) -> None:
        super().__init__(daemon=True)
        self.base, self.auth, self.bodies = base, auth, bodies
        self.answers: list[tuple[str, httpx.Response | str]] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=HTTP_TIMEOUT_S) as http:
            for ik, body in self.bodies:
                try:
                    r = http.post(
                        "/v1/charges", json=body, headers={**self.auth, "Idempotency-Key": ik}
                    )
                    self.answers.append((ik, r))
                except httpx.HTTPError as exc:
                    self.answers.append((ik, f"{type(exc).__name__}: {exc}"))


def test_redis_out_of_memory_is_503_worker_lives_nothing_half_applied(
    tmp_path: Path, server: RestartableRedis, sql_url: str
) -> None:
    engine = engine_for(sql_url)
    prefix = "o" + uuid.uuid4().hex[:10]
    keys = Keys(prefix=prefix, buckets=BUCKETS)
    tool = Tool(f"T{prefix.upper()}", 1, "credits")
    save_tools(engine, [tool])
    accounts = [f"{prefix}-{i}" for i in range(ACCOUNTS)]
    client = sync_client(server.url)
    env = server_env(server.url, sql_url, prefix, tmp_path / "api")
    auth = {
        "Authorization": "Bearer "
        + create_key(
            engine, env["CREDITMETER_SECRET_KEY"].encode(), name="oom-test", scope="admin"
        ).plaintext
    }
    workers = Workers(tmp_path, server.url, sql_url, keys)
    worker = workers.creditmeter_worker("worker")
    acked: list[str] = []
    chunks = 0
    try:
        with running_api(env, log_path=tmp_path / "api.log") as base:
            http = httpx.Client(base_url=base, timeout=HTTP_TIMEOUT_S, headers=auth)
            for a in accounts:
                r = http.post(
                    f"/v1/accounts/{a}/grants",
                    json={"credit_type": "credits", "amount": 10**6, "category": "paid"},
                    headers={"Idempotency-Key": f"grant-{a}"},
                )
                assert r.status_code == 201, r.text
                acked.append(r.json()["id"])
            r = http.post(
                "/v1/charges",
                json={"account_id": accounts[2], "tool": tool.name},
                headers={"Idempotency-Key": "to-refund"},
            )
            assert r.status_code == 201, r.text
            refundable = r.json()["id"]
            acked.append(refundable)
            assert wait_flushed(engine, keys, acked, 30) is not None, workers.tails()

            sync_q = Queue(queue_name(keys, SYNC), connection=client)
            # Due while Redis is full: rq's scheduler meets the error moving it to the queue.
            due_while_full = sync_q.enqueue_in(timedelta(seconds=2), SWEEP_JOB)
            chunks = _fill(client, prefix)
            full_since = time.monotonic()
            loads = [
                HttpLoad(
                    base,
                    auth,
                    [
                        (f"c-{t}-{i}", {"account_id": accounts[i % ACCOUNTS], "tool": tool.name})
                        for i in range(REFUSED_PER_THREAD)
                    ],
                )
                for t in range(CLIENT_THREADS)
            ]
            for load in loads:
                load.start()
            for load in loads:
                load.join(timeout=120)
            answers = [a for load in loads for a in load.answers]
            broken = [(ik, r) for ik, r in answers if isinstance(r, str)]
            assert not broken, broken[:3]
            statuses = sorted({r.status_code for _, r in answers if not isinstance(r, str)})
            assert statuses == [503], statuses
            first = next(r for _, r in answers if not isinstance(r, str))
            assert first.headers["content-type"] == "application/problem+json"
            assert first.json()["type"].endswith("redis-out-of-memory"), first.text
            assert int(first.headers["Retry-After"]) > 0
            other_writes = [
                (
                    f"/v1/accounts/{accounts[0]}/grants",
                    {"credit_type": "credits", "amount": 5, "category": "paid"},
                ),
                ("/v1/holds", {"account_id": accounts[1], "tool": tool.name, "amount": 5}),
                ("/v1/refunds", {"charge_id": refundable, "amount": 1}),
                (
                    f"/v1/accounts/{prefix}-new/grants",
                    {"credit_type": "credits", "amount": 5, "category": "paid"},
                ),
            ]
            for path, body in other_writes:
                r = http.post(path, json=body, headers={"Idempotency-Key": f"w-{path}"})
                assert r.status_code == 503 and "Retry-After" in r.headers, (path, r.text)
                assert r.json()["type"].endswith("redis-out-of-memory"), (path, r.text)
            ready = http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["redis_memory"] == "full", ready.text
            # A read needs no memory, but authentication may copy the key to Redis's replica
            # of API keys: answered, or a 503 like the writes, never a 500.
            r = http.get(f"/v1/accounts/{accounts[0]}/balance")
            assert r.status_code == 200 or r.json()["type"].endswith("redis-out-of-memory"), r.text
            time.sleep(max(0.0, FULL_S - (time.monotonic() - full_since)))
            assert worker.popen.poll() is None, f"the worker exited\n{workers.tails()}"

            _free(client, prefix, chunks)
            chunks = 0
            freed_s = time.monotonic()
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["redis_memory"] == "ok"
            # Every refused request, retried with its key: applied now, once.
            retried = []
            for ik, _ in answers:
                tid, i = ik.split("-")[1:]
                body = {"account_id": accounts[int(i) % ACCOUNTS], "tool": tool.name}
                r = http.post("/v1/charges", json=body, headers={"Idempotency-Key": ik})
                assert r.status_code == 201, r.text
                assert r.headers.get("Idempotent-Replayed") != "true", (tid, r.text)
                retried.append(r.json()["id"])
            acked += retried
            took_s = wait_flushed(engine, keys, retried, RESUME_S_MAX)
            assert took_s is not None, (
                f"charges not flushed after memory was freed\n{workers.tails()}"
            )
            print(
                f"out of memory: {len(answers)} charges answered 503; after memory was freed "
                f"{len(retried)} retries in SQL {time.monotonic() - freed_s:.2f} s later"
            )
            # rq's scheduler lived through it: the job due meanwhile and one scheduled now
            # are moved to the queue and run.
            due_after = sync_q.enqueue_in(timedelta(seconds=1), SWEEP_JOB)
            for job in (due_while_full, due_after):
                wait_until(
                    lambda job=job: job.get_status(refresh=True) == JobStatus.FINISHED,
                    SCHEDULED_JOB_S_MAX,
                    lambda job=job: f"scheduled job {job.get_status()}\n{workers.tails()}",
                )
            assert worker.popen.poll() is None, workers.tails()
            http.close()
        wait_drained(client, engine, keys, workers, DRAIN_TIMEOUT_S)
        worker.stop()
    finally:
        if chunks:
            _free(client, prefix, chunks)
        workers.kill_all()
    forget_dead_locks(client, keys)
    assert flushed_ids(engine, keys) == set(acked)
    assert_exactly_once(engine, keys, acked, workers.tails())
    assert_in_sync(client, engine, keys)
    client.close()
