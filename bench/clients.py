"""SPEC §10.2: the project's own clients on the bench Redis.

AsyncMeter: `concurrency` coroutines each charging in a loop (auto-batched into one charge
script call per bucket per round), over many accounts across the buckets, or all on one hot
account. Meter (sync): one charge at a time, each one timed: throughput and latency unloaded.
Only successful charges count, and each run ends by checking that the balances dropped by
exactly successes x cost.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from typing import Any

import redis

from bench import workload
from bench.server import cpu_seconds, redis_pid
from meter import AsyncMeter, Keys, MeterError

CONCURRENCY = 2000
SPREAD_ACCOUNTS = 1000
WARMUP_S = 0.5


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    """uvloop when installed (uvicorn[standard] runs the API on it), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


async def _async_throughput(
    url: str,
    keys: Keys,
    accounts: list[str],
    concurrency: int,
    seconds: float,
    warmup_s: float,
    probe: redis.Redis,
    pid: int,
) -> dict[str, Any]:
    meter = AsyncMeter.from_url(url, keys=keys)
    ok = 0
    errors: collections.Counter[str] = collections.Counter()
    running = True

    async def worker(i: int) -> None:
        nonlocal ok
        account = accounts[i % len(accounts)]
        while running:
            try:
                await meter.charge(account, workload.TOOL)
            except MeterError as exc:
                errors[type(exc).__name__] += 1
            else:
                ok += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup_s)
    ok0, calls0, t0 = ok, _evalsha_calls(probe), time.perf_counter()
    rcpu0, ccpu0 = cpu_seconds(pid), time.process_time()
    await asyncio.sleep(seconds)
    ok1, t1 = ok, time.perf_counter()
    rcpu1, ccpu1 = cpu_seconds(pid), time.process_time()
    calls1 = _evalsha_calls(probe)  # after the window: its own call is not counted in it
    running = False
    await asyncio.gather(*tasks)
    await meter.aclose()
    elapsed = t1 - t0
    return {
        "ok_total": ok,
        "charges": ok1 - ok0,
        "elapsed_s": elapsed,
        "value": (ok1 - ok0) / elapsed,
        "errors": dict(errors),
        "charges_per_script_call": (ok1 - ok0) / max(1, calls1 - calls0),
        "redis_cpu": (rcpu1 - rcpu0) / elapsed if pid else None,
        "client_cpu": (ccpu1 - ccpu0) / elapsed,
    }


def async_throughput(
    url: str,
    seconds: float,
    *,
    hot: bool,
    concurrency: int = CONCURRENCY,
    accounts: int = SPREAD_ACCOUNTS,
    warmup_s: float = WARMUP_S,
    prefix: str = workload.PREFIX,
) -> dict[str, Any]:
    """AsyncMeter charges/s with `concurrency` coroutines in flight."""
    names = ["hot-account"] if hot else workload.account_names(accounts)
    meter = workload.prepare(url, names, prefix)
    probe = meter.redis
    loop, loop_name = new_loop()
    try:
        out = loop.run_until_complete(
            _async_throughput(
                url, meter.keys, names, concurrency, seconds, warmup_s, probe, redis_pid(url)
            )
        )
    finally:
        loop.close()
    spent = workload.spent(meter, names)
    meter.redis.close()
    out.update(
        unit="charges/s",
        verified=spent == out["ok_total"] * workload.COST,
        note=(
            f"{concurrency} coroutines, {loop_name}, "
            + ("1 hot account" if hot else f"{len(names)} accounts / {meter.keys.buckets} buckets")
        ),
    )
    if not out["verified"]:
        out["note"] += f"; BALANCE MISMATCH: spent {spent} != {out['ok_total']} x cost"
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def sync_charges(
    url: str, seconds: float, *, warmup: int = 200, prefix: str = workload.PREFIX
) -> dict[str, Any]:
    """Meter: one charge at a time on one connection; charges/s and each charge's latency."""
    account = "sync-account"
    meter = workload.prepare(url, [account], prefix)
    for _ in range(warmup):
        meter.charge(account, workload.TOOL)
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    now = start
    while now < deadline:
        try:
            meter.charge(account, workload.TOOL)
        except MeterError as exc:
            errors[type(exc).__name__] += 1
            now = clock()
            continue
        t = clock()
        latencies.append(t - now)
        now = t
    elapsed = now - start
    verified = workload.spent(meter, [account]) == (warmup + len(latencies)) * workload.COST
    meter.redis.close()
    latencies.sort()
    ms = 1000.0
    return {
        "value": len(latencies) / elapsed,
        "unit": "charges/s",
        "charges": len(latencies),
        "elapsed_s": elapsed,
        "errors": dict(errors),
        "verified": verified,
        "p50_ms": _percentile(latencies, 0.50) * ms,
        "p99_ms": _percentile(latencies, 0.99) * ms,
        "mean_ms": statistics.fmean(latencies) * ms if latencies else 0.0,
        "note": "1 connection, sequential, unloaded",
    }
