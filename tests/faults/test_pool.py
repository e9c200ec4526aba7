"""Issue 12 item 7: a full Redis connection pool makes a charge wait, never fail at once; event
streams share one pub/sub connection per API process; an account opens at most
api.sse.STREAMS_PER_ACCOUNT_MAX streams per process. The shared pub/sub connection lost:
redis-py's reconnect brings a fresh snapshot; Redis gone ends the streams, and the hub comes
back for new ones when Redis does.

Its own redis-server, a SQLite file (or TEST_DATABASE_URL), a real `creditmeter api --workers
2`. 500 open event streams over 100 accounts, then 1,000 concurrent charges: every charge is
201 (before: a pool capped at 100 per process answered 503 at once, and each stream held a
connection of it), every stream's last event shows its account's balance after all its
charges (events are one per wallet per script call, so a batch of charges is one), and Redis
sees at most one pub/sub connection per API process and a bounded number of clients.

The HTTP client is raw asyncio sockets: thousands of concurrent requests from one test
process, at a fraction of an HTTP library's CPU cost on a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from api import pubsub, sse
from meter import Tool
from meter.embedded import EmbeddedRedis
from meter.keys import Keys
from meter.redis_conn import async_client, sync_client
from sync.apikeys import create_key
from sync.catalog import save_tools
from sync.db import engine_for
from tests.api.server import running_api, server_env
from tests.faults.worker_faults import RestartableRedis

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

HOST = "127.0.0.1"
WORKERS = 2
ACCOUNTS = 100
STREAMS_PER_ACCOUNT = 5  # the per-account limit: 500 streams in all
CHARGES = 1000
GRANT = 10_000
TOOL_COST = 1
SETUP_CONCURRENCY = 25  # grants and tokens before the measurement: just not one by one
OPEN_CONCURRENCY = 50  # streams opened at once
SNAPSHOT_WAIT_S = 30.0  # every stream has its first snapshot (it is subscribed) by then
EVENTS_WAIT_S = 20.0  # every charge's event reached every stream of its account by then
HTTP_TIMEOUT_S = 30.0  # one request; a charge waits at most the pool's wait for a connection
HUB_WAIT_S = 15.0  # an item the hub owes a stream: redis-py's retries, the hub's backoff
SAMPLE_INTERVAL_S = 0.05  # how often Redis's clients are counted during the charges
# Redis clients at any time: far fewer than the streams (one connection each, before), and
# room for each API process's asyncio pool and its sync pool of work run in threads.
CLIENTS_MAX = 300


@dataclass
class Api:
    port: int
    admin: dict[str, str]
    meter: dict[str, str]
    tool: str
    prefix: str


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running(tmp_path: Path, redis_url: str, sql_url: str, workers: int) -> Iterator[Api]:
    engine = engine_for(sql_url)
    prefix = "p" + uuid.uuid4().hex[:10]
    tool = Tool(f"T{prefix.upper()}", TOOL_COST, "credits")
    save_tools(engine, [tool])
    env = server_env(redis_url, sql_url, prefix, tmp_path / "api")
    secret = env["CREDITMETER_SECRET_KEY"].encode()

    def bearer(scope: str) -> dict[str, str]:
        key = create_key(engine, secret, name=f"pool-{scope}", scope=scope).plaintext
        return {"Authorization": f"Bearer {key}"}

    admin, meter = bearer("admin"), bearer("meter")
    with running_api(env, workers=workers, log_path=tmp_path / "api.log") as base:
        yield Api(int(base.rsplit(":", 1)[1]), admin, meter, tool.name, prefix)


async def request(
    port: int, method: str, path: str, headers: dict[str, str], body: object = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on its own connection: status, headers (lower-case), body."""
    payload = b"" if body is None else json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        raw = await asyncio.wait_for(reader.read(), HTTP_TIMEOUT_S)
    finally:
        writer.close()
    head_raw, _, content = raw.partition(b"\r\n\r\n")
    lines = head_raw.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, content


@dataclass(eq=False)
class Stream:
    """An open event stream: the balance its last event showed, and its snapshot."""

    account: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    snapshot: asyncio.Event = field(default_factory=asyncio.Event)
    balance: int | None = None  # of the last balance event read
    ended: bool = False
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None

    async def open(self, port: int, token: str) -> None:
        reader, self.writer = await asyncio.open_connection(HOST, port)
        path = f"/v1/accounts/{self.account}/events?token={token}"
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), HTTP_TIMEOUT_S)
        self.status = int(status_line.split(b" ")[1])
        while (line := await reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().strip().partition(": ")
            self.headers[k.lower()] = v
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        # Chunk-size lines of the chunked body are skipped with every other non-data line.
        with contextlib.suppress(ConnectionError):
            async for line in reader:
                if line.startswith(b"data: "):
                    event = json.loads(line[len(b"data: ") :])
                    if event["entry_id"] is None:
                        self.snapshot.set()
                    else:
                        self.balance = event["balance"]
        self.ended = True

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def token_for(api: Api, account: str) -> str:
    status, _, body = await request(api.port, "POST", f"/v1/accounts/{account}/tokens", api.meter)
    assert status == 201, body
    return str(json.loads(body)["token"])


async def bounded(limit: int, coros: list) -> list:
    sem = asyncio.Semaphore(limit)

    async def one(coro):  # type: ignore[no-untyped-def]
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


class ClientSampler(threading.Thread):
    """Counts Redis's clients (all, and pub/sub ones) until stopped; keeps the maxima."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.clients_max = 0
        self.pubsub_max = 0
        self._stop_event = threading.Event()

    def count(self) -> tuple[int, int]:
        clients = self.client.client_list()
        return len(clients), sum(1 for c in clients if int(c.get("sub", 0)) > 0)

    def run(self) -> None:
        while not self._stop_event.is_set():
            clients, pubsub = self.count()
            self.clients_max = max(self.clients_max, clients)
            self.pubsub_max = max(self.pubsub_max, pubsub)
            time.sleep(SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def p99_ms(latencies_s: list[float]) -> float:
    ordered = sorted(latencies_s)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.mark.timeout(180)
async def test_1000_charges_with_500_open_streams_never_503(
    tmp_path: Path, redis_server: EmbeddedRedis, sql_url: str
) -> None:
    sampler = ClientSampler(redis_server.url)
    with running(tmp_path, redis_server.url, sql_url, WORKERS) as api:
        accounts = [f"{api.prefix}-{i}" for i in range(ACCOUNTS)]

        async def grant(a: str) -> int:
            body = {"credit_type": "credits", "amount": GRANT, "category": "paid"}
            hdrs = {**api.admin, "Idempotency-Key": uuid.uuid4().hex}
            return (await request(api.port, "POST", f"/v1/accounts/{a}/grants", hdrs, body))[0]

        assert set(await bounded(SETUP_CONCURRENCY, [grant(a) for a in accounts])) == {201}
        tokens = await bounded(SETUP_CONCURRENCY, [token_for(api, a) for a in accounts])
        streams = [Stream(a) for a in accounts for _ in range(STREAMS_PER_ACCOUNT)]
        token_of = dict(zip(accounts, tokens, strict=True))
        await bounded(OPEN_CONCURRENCY, [s.open(api.port, token_of[s.account]) for s in streams])
        opened_at = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SNAPSHOT_WAIT_S):
                await asyncio.gather(*(s.snapshot.wait() for s in streams))
        snapshots_s = time.perf_counter() - opened_at
        stream_statuses = Counter(s.status for s in streams)
        subscribed = sum(1 for s in streams if s.snapshot.is_set() and not s.ended)

        sampler.start()
        latencies_s: list[float] = []
        refusals: Counter[str] = Counter()  # the detail of each refusal

        async def charge(i: int) -> tuple[int, str | None]:
            a = accounts[i % ACCOUNTS]
            hdrs = {**api.meter, "Idempotency-Key": uuid.uuid4().hex}
            t0 = time.perf_counter()
            try:
                status, _, body = await request(
                    api.port, "POST", "/v1/charges", hdrs, {"account_id": a, "tool": api.tool}
                )
            except (OSError, TimeoutError) as exc:
                return -1, type(exc).__name__
            latencies_s.append(time.perf_counter() - t0)
            if status != 201:
                refusals[json.loads(body).get("detail", "")] += 1
                return status, None
            return status, json.loads(body)["id"]

        t0 = time.perf_counter()
        results = await asyncio.gather(*(charge(i) for i in range(CHARGES)))
        burst_s = time.perf_counter() - t0
        sampler.stop()
        charge_statuses = Counter(status for status, _ in results)
        charged: Counter[str] = Counter()
        for i, (status, entry_id) in enumerate(results):
            if status == 201 and entry_id is not None:
                charged[accounts[i % ACCOUNTS]] += 1

        def missing() -> int:
            """Streams whose last event is not their account's balance after its charges."""
            return sum(1 for s in streams if s.balance != GRANT - TOOL_COST * charged[s.account])

        deadline = time.monotonic() + EVENTS_WAIT_S
        while missing() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        clients_after, pubsub_after = sampler.count()
        sampler.client.close()
        for s in streams:
            await s.close()

    print(
        f"\nstreams: {dict(stream_statuses)} statuses, {subscribed} subscribed"
        f" ({snapshots_s:.1f} s after opening);"
        f" charges: {dict(charge_statuses)} in {burst_s:.2f} s, p99 {p99_ms(latencies_s):.0f} ms;"
        f" streams behind: {missing()};"
        f" Redis clients max {sampler.clients_max} (pub/sub {sampler.pubsub_max}),"
        f" after {clients_after} (pub/sub {pubsub_after})"
    )
    assert stream_statuses == {200: ACCOUNTS * STREAMS_PER_ACCOUNT}
    assert subscribed == ACCOUNTS * STREAMS_PER_ACCOUNT
    assert charge_statuses == {201: CHARGES}, refusals
    assert missing() == 0
    assert sampler.pubsub_max <= WORKERS
    assert pubsub_after <= WORKERS
    assert sampler.clients_max <= CLIENTS_MAX


async def test_the_sixth_stream_of_an_account_is_429(
    tmp_path: Path, redis_server: EmbeddedRedis, sql_url: str
) -> None:
    with running(tmp_path, redis_server.url, sql_url, 1) as api:
        account, other = f"{api.prefix}-a", f"{api.prefix}-b"
        token, other_token = await token_for(api, account), await token_for(api, other)
        streams = [Stream(account) for _ in range(STREAMS_PER_ACCOUNT)]
        extra, neighbour = Stream(account), Stream(other)
        try:
            for s in streams:
                await s.open(api.port, token)
                assert s.status == 200
            await extra.open(api.port, token)
            assert extra.status == 429
            assert extra.headers["content-type"] == "application/problem+json"
            assert int(extra.headers["retry-after"]) > 0
            await neighbour.open(api.port, other_token)
            assert neighbour.status == 200  # the limit is the account's, not the process's

            # A stream that leaves frees its place.
            await streams.pop().close()
            deadline = time.monotonic() + sse.READ_TIMEOUT_S + 5.0
            while True:
                again = Stream(account)
                await again.open(api.port, token)
                await again.close()
                if again.status == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert again.status == 200
        finally:
            for s in [*streams, extra, neighbour]:
                await s.close()


def balance_message(account_id: str) -> str:
    # As lua/includes/balance_event.lua writes it: the account first.
    return json.dumps(
        {"account_id": account_id, "credit_type": "credits", "available": 1, "held": 0,
         "balance": 1, "entry_id": uuid.uuid4().hex}
    )  # fmt: skip


async def next_item(listener: pubsub.Listener) -> pubsub.Item:
    async with asyncio.timeout(HUB_WAIT_S):
        return await listener.queue.get()


async def test_the_event_hub_resnapshots_after_a_lost_connection_and_survives_redis_restart(
    tmp_path: Path,
) -> None:
    server = RestartableRedis(tmp_path / "redis")
    server.start()
    control = sync_client(server.url)
    hub = pubsub.EventHub(async_client(server.url))
    channel = Keys(prefix="hub", buckets=1).events(0)
    try:
        first = hub.join(channel, "a")
        assert isinstance(await next_item(first), pubsub.Snapshot)

        # The connection is cut: redis-py reconnects and re-subscribes; messages may have
        # been missed in between, so the stream gets a fresh snapshot and then goes on.
        assert control.client_kill_filter(_type="pubsub") == 1
        assert isinstance(await next_item(first), pubsub.Snapshot)
        control.publish(channel, balance_message("a"))
        got = await next_item(first)
        assert isinstance(got, dict) and got["account_id"] == "a"

        # Redis gone past redis-py's retries: the stream ends cleanly.
        server.kill()
        assert await next_item(first) == pubsub.END
        assert hub.listeners() == 0

        # Back: the hub reconnects (with backoff) for the streams that come next.
        server.start()
        control = sync_client(server.url)
        second = hub.join(channel, "a")
        assert isinstance(await next_item(second), pubsub.Snapshot)
        control.publish(channel, balance_message("a"))
        got = await next_item(second)
        assert isinstance(got, dict) and got["account_id"] == "a"
        pubsub_clients = [c for c in control.client_list() if int(c["sub"]) > 0]
        assert len(pubsub_clients) == 1
    finally:
        await hub.aclose()
        control.close()
        server.stop()
