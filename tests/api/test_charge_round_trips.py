"""What one POST /v1/charges costs in Redis commands, on a private server under MONITOR.

Concurrent charge requests on one API worker: each sends exactly one deployment-wide
Idempotency-Key claim (SET NX GET), and the charges travel as script calls merged by the
worker's shared AsyncMeter (fewer EVALSHA than requests when they hit one bucket together).
Authentication adds nothing once the key is cached (no HMGET, no SQL), nor does anything
else: a regression that adds a command per request fails here.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meter import Meter, NewAccountLoader, Tool
from meter.keys import Keys
from sync.apikeys import create_key
from sync.catalog import save_tools
from sync.db import engine_for
from tests.api.server import running_api, server_env
from tests.servers import private_redis

REQUESTS = 64  # in flight together, on one account: one bucket, so the meter can merge them
MONITOR_READY_S = 0.3  # redis-cli connects and starts MONITOR before the burst
HTTP_TIMEOUT_S = 30.0
# Rounds of claims and script calls overlap more on a loaded machine (CI saw 11); one
# connection per claim (64) is the bug this bound catches.
NEW_CONNECTIONS_MAX = REQUESTS // 4
REPLICA_UPKEEP = frozenset({"hgetall", "hset", "hdel"})  # api.auth's resync, every few s
TOOL = Tool(name="RT_TOOL", cost=1, credit_type="credits")
# `1700000000.123456 [0 127.0.0.1:5555] "EVALSHA" "..."`; a script's own calls say `[0 lua]`.
MONITOR_LINE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"(?: "([^"]*)")?')


@pytest.fixture(scope="module")
def private_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module alone: MONITOR sees no other test's traffic."""
    server = private_redis(tmp_path_factory.mktemp("rt-redis"), appendonly=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(
    private_url: str, sql_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """(base URL, meter key, funded account) of a one-worker `creditmeter api`."""
    prefix = "rt" + uuid.uuid4().hex[:8]
    env = server_env(private_url, sql_url, prefix, tmp_path_factory.mktemp("rt-api"))
    engine = engine_for(sql_url)
    try:
        save_tools(engine, [TOOL])
        key = create_key(
            engine, env["CREDITMETER_SECRET_KEY"].encode(), name="round-trips", scope="meter"
        ).plaintext
    finally:
        engine.dispose()
    keys = Keys(prefix=prefix, buckets=int(env["CREDITMETER_BUCKETS"]))
    meter = Meter.from_url(private_url, keys=keys, loader=NewAccountLoader([TOOL]))
    account = "rt-account"
    try:
        meter.set_tools([TOOL])
        meter.grant(account, "credits", 1_000_000, category="paid")
    finally:
        meter.redis.close()
    with running_api(env, workers=1) as base:
        yield base, key, account


async def _charge_together(base: str, key: str, account: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=HTTP_TIMEOUT_S) as client:

        async def one() -> int:
            r = await client.post(
                "/v1/charges",
                json={"account_id": account, "tool": TOOL.name},
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
            )
            return r.status_code

        return await asyncio.gather(*(one() for _ in range(count)))


def _sent_by_clients(monitor_text: str) -> Counter[tuple[str, str]]:
    """(command, first key's kind) of every command a client sent; scripts' calls left out."""
    sent: Counter[tuple[str, str]] = Counter()
    for line in monitor_text.splitlines():
        m = MONITOR_LINE.match(line)
        if m is None or m.group(1) == "lua":
            continue
        command, first = m.group(2).lower(), m.group(3) or ""
        kind = "other"
        if ":http-idem:" in first:
            kind = "http-idem"
        elif first.endswith(":apikeys"):
            kind = "apikeys"
        sent[(command, kind)] += 1
    return sent


def test_each_charge_request_costs_one_claim_and_at_most_one_script_call(
    api: tuple[str, str, str], private_url: str, tmp_path: Path
) -> None:
    base, key, account = api
    # Warm: the key is verified and cached, the script loaded.
    assert asyncio.run(_charge_together(base, key, account, 2)) == [201, 201]
    log = tmp_path / "monitor.txt"
    with open(log, "wb") as sink:
        monitor = subprocess.Popen(["redis-cli", "-u", private_url, "monitor"], stdout=sink)
        try:
            time.sleep(MONITOR_READY_S)
            statuses = asyncio.run(_charge_together(base, key, account, REQUESTS))
        finally:
            monitor.terminate()
            monitor.wait()
    assert statuses == [201] * REQUESTS
    sent = _sent_by_clients(log.read_text(errors="replace"))
    assert sent.pop(("set", "http-idem")) == REQUESTS  # the deployment-wide claim
    script_calls = sent.pop(("evalsha", "other"))
    assert script_calls < REQUESTS, "concurrent charges of one bucket were not merged"
    # Per interval, not per request: the key replica's background resync, and one HMGET when
    # the worker's cached key expires during the burst.
    for command in [c for c in sent if c[1] == "apikeys" and c[0] in REPLICA_UPKEEP]:
        sent.pop(command)
    assert sent.pop(("hmget", "apikeys"), 0) <= 1
    for command in [c for c in sent if c[0] in ("multi", "exec")]:
        sent.pop(command)  # the resync's transaction around its writes
    # A connection's handshake: the claims of requests in flight together share a pipeline
    # (one connection), not a pooled connection each.
    connections = sent.pop(("hello", "other"), 0)
    assert connections <= NEW_CONNECTIONS_MAX, f"{connections} connections opened"
    sent.pop(("ping", "other"), None)  # redis-py checks a connection it takes from the pool
    assert sent == Counter(), f"commands beyond the claim and the script call: {dict(sent)}"
