"""`python -m bench.cluster [--seconds S] [--concurrency N]`: charges/s of AsyncMeter (and of
the sync Meter, one charge at a time) on one Redis and on a 3-master Redis Cluster, both
started here without persistence, with the Redis CPU each server used.

Same workload on both: ACCOUNTS funded accounts over the default 16 buckets, every coroutine
charging its account in a loop; a run counts only successful charges and checks that the
balances dropped by exactly that many x cost.

`make bench` takes the AsyncMeter half as its cluster rows (rows()): charges/s and Redis
CPU us/charge on the bench's own Redis and on a fresh 3-master cluster, one after the other
in the same run; skipped with the reason when the cluster cannot start (a redis-server
built without cluster support, no redis-cli).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import workload
from bench.cluster_server import PrivateCluster
from bench.server import PrivateRedis, cpu_seconds, redis_pid
from meter import AsyncMeter, Keys, Meter, MeterError, NewAccountLoader, Tool

ACCOUNTS = 1000  # as bench/clients.py: enough that every bucket has many
CONCURRENCY = 2000  # as bench/clients.py: the batcher's rounds are full
WARMUP_S = 0.5
HEADER = (
    "| Redis | AsyncMeter charges/s | Meter charges/s | Redis CPU (cores) | errors "
    "| balances checked |"
)


def _prepare(url: str, accounts: list[str], prefix: str) -> Meter:
    tool = Tool(name=workload.TOOL, cost=workload.COST, credit_type=workload.CREDIT_TYPE)
    meter = Meter.from_url(url, keys=Keys(prefix=prefix), loader=NewAccountLoader())
    meter.set_tools([tool])
    for account in accounts:
        meter.grant(account, workload.CREDIT_TYPE, workload.FUNDS, category="paid")
    return meter


async def _async_charges(
    url: str, accounts: list[str], concurrency: int, seconds: float, pids: list[int], prefix: str
) -> dict[str, Any]:
    meter = AsyncMeter.from_url(url, keys=Keys(prefix=prefix))
    ok = 0
    errors = 0
    running = True

    async def worker(i: int) -> None:
        nonlocal ok, errors
        account = accounts[i % len(accounts)]
        while running:
            try:
                await meter.charge(account, workload.TOOL)
            except MeterError:
                errors += 1
            else:
                ok += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(WARMUP_S)
    ok0, t0, cpu0 = ok, time.perf_counter(), [cpu_seconds(p) for p in pids]
    await asyncio.sleep(seconds)
    ok1, t1, cpu1 = ok, time.perf_counter(), [cpu_seconds(p) for p in pids]
    running = False
    await asyncio.gather(*tasks)
    await meter.aclose()
    elapsed = t1 - t0
    return {
        "ok_total": ok,
        "errors": errors,
        "value": (ok1 - ok0) / elapsed,
        "redis_cpu": [(b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True)],
    }


def _sync_charges(meter: Meter, account: str, seconds: float) -> tuple[int, float]:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        meter.charge(account, workload.TOOL)
        done += 1
    return done, done / (time.perf_counter() - start)


def measure(
    url: str,
    pids: list[int],
    seconds: float,
    concurrency: int,
    *,
    accounts_n: int = ACCOUNTS,
    with_sync: bool = True,
    prefix: str = workload.PREFIX,
) -> dict[str, Any]:
    accounts = workload.account_names(accounts_n)
    meter = _prepare(url, accounts, prefix)
    out = asyncio.run(_async_charges(url, accounts, concurrency, seconds, pids, prefix))
    sync_done, out["sync_value"] = (
        _sync_charges(meter, accounts[0], seconds) if with_sync else (0, None)
    )
    spent = workload.spent(meter, accounts)
    out["verified"] = spent == (out["ok_total"] + sync_done) * workload.COST
    meter.redis.close()
    return out


# What can keep the cluster from starting: no cluster support in redis-server, no redis-cli
# (AssertionError from bench.cluster_server), a node that never answers.
CLUSTER_START_ERRORS = (
    OSError,
    AssertionError,
    subprocess.CalledProcessError,
    subprocess.TimeoutExpired,
    redis.RedisError,
)
ROW_KEYS = ["cluster_1_node", "cluster_3_nodes", "cluster_1_node_cpu", "cluster_3_nodes_cpu"]


def _bench_figures(key: str, fig: dict[str, Any], what: str, note: str) -> dict[str, Any]:
    cpu_us = sum(fig["redis_cpu"]) / fig["value"] * 1e6 if fig["value"] else 0.0
    cores = " + ".join(f"{c:.2f}" for c in fig["redis_cpu"])
    return {
        key: {
            "value": fig["value"],
            "unit": "charges/s",
            "note": f"{what}; {note}",
            "verified": fig["verified"],
            "errors": {"MeterError": fig["errors"]} if fig["errors"] else {},
        },
        f"{key}_cpu": {
            "value": cpu_us,
            "unit": "us/charge",
            "note": f"Redis CPU of {what} per charge ({cores} cores busy)",
        },
    }


def rows(
    single_url: str,
    seconds: float,
    *,
    concurrency: int = CONCURRENCY,
    accounts: int = ACCOUNTS,
    prefix: str = workload.PREFIX,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """make bench's cluster rows: AsyncMeter on single_url (the bench's Redis, flushed), then
    on a 3-master cluster started here; each figure checked against the balances."""
    note = f"AsyncMeter, {concurrency} coroutines over {accounts} accounts, 16 buckets"
    pids = [redis_pid(single_url)]
    sizes: dict[str, Any] = {"accounts_n": accounts, "with_sync": False, "prefix": prefix}
    one = measure(single_url, pids, seconds, concurrency, **sizes)
    out = _bench_figures("cluster_1_node", one, "1 Redis", note)
    with tempfile.TemporaryDirectory(prefix="creditmeter-cluster-") as tmp:
        cluster = PrivateCluster(Path(tmp))
        t = time.perf_counter()
        try:
            cluster.start()
        except CLUSTER_START_ERRORS as exc:
            cluster.stop()
            reason = f"skipped: no Redis Cluster ({type(exc).__name__}: {str(exc)[:80]})"
            return {
                **out,
                "cluster_3_nodes": {"skipped": reason},
                "cluster_3_nodes_cpu": {"skipped": reason},
            }
        say(f"    cluster: 3 masters up in {time.perf_counter() - t:.1f} s")
        try:
            three = measure(cluster.url, cluster.pids, seconds, concurrency, **sizes)
        finally:
            cluster.stop()
    return {**out, **_bench_figures("cluster_3_nodes", three, "3-master cluster", note)}


def _row(name: str, fig: dict[str, Any]) -> str:
    cpu = " + ".join(f"{c:.2f}" for c in fig["redis_cpu"])
    checked = "yes" if fig["verified"] else "NO: BALANCE MISMATCH"
    return (
        f"| {name} | {fig['value']:,.0f} | {fig['sync_value']:,.0f} | {cpu} | "
        f"{fig['errors']} | {checked} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args()
    rows = []
    single = PrivateRedis()
    url = single.start()
    try:
        rows.append(_row("1 Redis", measure(url, [redis_pid(url)], args.seconds, args.concurrency)))
    finally:
        single.stop()
    with (
        tempfile.TemporaryDirectory(prefix="creditmeter-cluster-") as tmp,
        PrivateCluster(Path(tmp)) as cluster,
    ):
        fig = measure(cluster.url, cluster.pids, args.seconds, args.concurrency)
        rows.append(_row("3-master cluster", fig))
    print(
        f"AsyncMeter: {args.concurrency} coroutines over {ACCOUNTS} accounts, 16 buckets; "
        f"Meter: one charge at a time; {args.seconds:g} s each\n"
    )
    print(HEADER)
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
