"""`python -m bench [--runs N] [--seconds S] [--quick]`: SPEC §10 items 1-5, side by side.

Starts its own redis-server (no AOF) so it never touches a shared Redis; PostgreSQL from
CREDITMETER_BENCH_DATABASE_URL or the local default, in its own tables (the flush rows in
a schema of their own). The HTTP rows (bench/http.py) start `creditmeter api` once per run
with --http-workers uvicorn workers and load GET /healthz, then POST /v1/charges, with wrk
(installed with apt-get when missing, else those rows are skipped). The Redis Cluster rows
(bench/cluster.py) start a 3-master cluster next to the bench's Redis (skipped, with the
reason, when it cannot start). Each run measures every row once, in order; the report takes
medians over runs and ratios within runs, and ends with issue 15's table: each figure
against its limit. The two long flush rows (lag under load, drain after an outage: over 2
minutes together) run in the first run only unless --flush-long-every-run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import (
    ceiling,
    clients,
    cluster,
    flush,
    http,
    lean_ceiling,
    memory,
    report,
    sql_baseline,
)
from bench.server import PrivateRedis

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _say(text: str) -> None:
    print(text, flush=True)


def _fmt(fig: dict[str, Any]) -> str:
    if "skipped" in fig:
        return str(fig["skipped"])
    if fig.get("value") is None:
        return "n/a"
    digits = {"ms": 3, "s": 2}.get(fig["unit"], 0)
    text = f"{fig['value']:,.{digits}f} {fig['unit']}"
    if fig.get("verified") is False:
        text += " (NOT VERIFIED)"
    return text


def _cpu_ticks() -> list[int]:
    """The machine's CPU time by state (/proc/stat: user nice system idle iowait irq softirq
    steal ...), [] when unknown."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return []


def _steal(before: list[int], after: list[int]) -> str:
    """Share of CPU time the hypervisor gave other guests: on a shared VM, every row drops."""
    if len(before) < 8 or len(after) < 8:
        return "unknown"
    delta = [b - a for a, b in zip(before, after, strict=False)]
    busy = sum(delta[:3]) + sum(delta[4:8])
    return f"steal {delta[7] / max(1, sum(delta)):.0%} of CPU time, busy (incl. steal) " + (
        f"{busy / max(1, sum(delta)):.0%}"
    )


def _load() -> str:
    """Other processes on the machine skew every row: the report says how busy it was."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


QUICK_FLUSH: dict[str, Any] = {
    "entries": 2000,
    "accounts": 20,
    "lag_seconds": 2.0,
    "outage_seconds": 2.0,
}


QUICK_HTTP: dict[str, Any] = {"warmup_s": 1}
# Issue 15's AsyncMeter figure, compared with the lean ceiling: 64 accounts, 512 in flight.
ASYNC_64X512: dict[str, Any] = {"accounts": 64, "concurrency": 512}
# --quick: the cluster start (~3 s) stays; fewer accounts to fund and coroutines to run.
QUICK_CLUSTER: dict[str, Any] = {"accounts": 64, "concurrency": 256}


def one_run(
    url: str,
    seconds: float,
    quick: bool,
    sql_url: str,
    flush_long: bool = True,
    http_opts: dict[str, Any] | None = None,
) -> report.Run:
    flusher = redis.Redis.from_url(url)
    run: report.Run = {}
    small: dict[str, Any] = {"concurrency": 50, "accounts": 20, "warmup_s": 0.05} if quick else {}

    def step(key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        flusher.flushall()  # the bench's private server: every row starts from empty
        t = time.perf_counter()
        fig = fn()
        run[key] = fig
        _say(f"  {key:<22} {_fmt(fig):<34} ({time.perf_counter() - t:.1f} s)")
        return fig

    calls = 2048 if quick else None
    step("ceiling", lambda: ceiling.measure(url, seconds, calls=calls))
    step("lean_ceiling", lambda: lean_ceiling.measure(url, seconds, calls=calls))
    step("async_spread", lambda: clients.async_throughput(url, seconds, hot=False, **small))
    small.pop("accounts", None)
    step("async_hot", lambda: clients.async_throughput(url, seconds, hot=True, **small))
    warmup = {"warmup_s": small["warmup_s"]} if quick else {}
    step(
        "async_64x512",
        lambda: clients.async_throughput(url, seconds, hot=False, **ASYNC_64X512, **warmup),
    )
    sync = step("sync_throughput", lambda: clients.sync_charges(url, seconds))
    for q in ("p50", "p99"):
        if "value" in sync:
            run[f"sync_{q}"] = {
                "value": sync[f"{q}_ms"],
                "unit": "ms",
                "note": f"of {sync['charges']:,} sequential charges",
            }
            _say(f"  sync_{q:<17} {_fmt(run[f'sync_{q}'])}")
    sql_kw: dict[str, Any] = {"url": sql_url}
    if quick:
        sql_kw["accounts"] = 20
    step("sql_hot", lambda: sql_baseline.measure(seconds, hot=True, **sql_kw))
    step("sql_spread", lambda: sql_baseline.measure(seconds, hot=False, **sql_kw))
    step(
        "sql_hot_nowait",
        lambda: sql_baseline.measure(seconds, hot=True, no_commit_wait=True, **sql_kw),
    )
    flusher.flushall()

    def timed_row(key: str, fig: dict[str, Any], took: float) -> None:
        run[key] = fig
        _say(f"  {key:<22} {_fmt(fig):<34} ({took:.1f} s)")

    http.measure(
        url,
        seconds,
        say=_say,
        on_row=timed_row,
        **(QUICK_HTTP if quick else {}),
        **(http_opts or {}),
    )
    flusher.flushall()
    mem = memory.measure(url, journal_charges=100 if quick else memory.JOURNAL_CHARGES)
    for key, fig in mem.items():
        run[key] = fig
        _say(f"  {key:<22} {_fmt(fig)}")
    flusher.flushall()

    flush.measure(
        url,
        sql_url,
        long_rows=flush_long,
        say=_say,
        on_row=timed_row,
        **(QUICK_FLUSH if quick else {}),
    )
    if "flush_lag_p99" in run:  # the long flush rows ran (run 1, or every run when asked)
        lag = run["flush_lag_p99"]
        achieved = (
            {"value": lag["achieved_rate"], "unit": "charges/s", "note": "while lag was measured"}
            if "achieved_rate" in lag
            else {"skipped": lag.get("skipped", "skipped: no lag figure")}
        )
        timed_row("flush_lag_achieved", achieved, 0.0)
    flusher.flushall()
    t = time.perf_counter()
    for key, fig in cluster.rows(
        url, seconds, say=_say, **(QUICK_CLUSTER if quick else {})
    ).items():
        timed_row(key, fig, time.perf_counter() - t)
    flusher.close()
    return run


GC_GEN0_THRESHOLD = 100_000  # fewer collections of the young generation under load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs; figures are medians")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument(
        "--flush-long-every-run",
        action="store_true",
        help="measure flush lag and drain after outage in every run (default: the first)",
    )
    parser.add_argument(
        "--http-workers",
        type=int,
        default=http.WORKERS,
        help="uvicorn workers of the HTTP server (creditmeter api)",
    )
    parser.add_argument(
        "--http-connections", type=int, default=http.CONNECTIONS, help="wrk connections"
    )
    parser.add_argument(
        "--profile-http",
        action="store_true",
        help="py-spy one API worker under the charge load (run 1, after the measured run)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds = min(args.runs, 1), min(args.seconds, 0.5)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # What a long-running service does after start-up: the client allocates many short-lived
    # objects per charge, and full collections over the start-up heap cost ~30% of its CPU.
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
    print(f"gc: freeze() after start-up, gen0 threshold {GC_GEN0_THRESHOLD}")
    server = PrivateRedis()
    url = server.start()
    sql_url = sql_baseline.database_url()
    wrk = http.find_wrk(install=True, say=_say)  # once, before the runs (apt-get if missing)
    try:
        meta = {
            "started_utc": started,
            "runs": args.runs,
            "seconds per measurement": args.seconds,
            "machine": f"{os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(),
            "redis": server.version(),
            "event loop": clients.new_loop()[1],
            "sql": sql_url.split("@")[-1],
            "redis-benchmark": ceiling.binary() or "not found",
            "HTTP server": f"creditmeter api, {args.http_workers} uvicorn worker(s), 127.0.0.1, "
            f"log level warning, uvloop + httptools; load: {wrk or 'wrk not installed'} "
            f"-t{http.WRK_THREADS} -c{args.http_connections} --latency on loopback",
            "flush lag and drain rows": "every run"
            if args.flush_long_every_run or args.runs == 1
            else f"run 1 of {args.runs} only (--flush-long-every-run to repeat them)",
        }
        meta["load average at start (1, 5, 15 min)"] = _load()
        ticks_start = _cpu_ticks()
        _say(f"bench: private Redis {server.version()} at {url}; SQL {meta['sql']}")
        runs = []
        for i in range(args.runs):
            _say(f"run {i + 1}/{args.runs}")
            flush_long = i == 0 or args.flush_long_every_run
            http_opts: dict[str, Any] = {
                "workers": args.http_workers,
                "connections": args.http_connections,
            }
            if args.profile_http and i == 0:
                stamp = started.replace(":", "").replace("-", "")
                http_opts["profile_out"] = args.out / f"http-profile-{stamp}.txt"
            runs.append(one_run(url, args.seconds, args.quick, sql_url, flush_long, http_opts))
    finally:
        server.stop()
    meta["load average at end (1, 5, 15 min)"] = _load()
    meta["machine CPU over the bench (/proc/stat)"] = _steal(ticks_start, _cpu_ticks())
    for i, r in enumerate(runs):
        line = http.where_the_time_goes(r)
        if line:
            meta[f"HTTP goal missed, where the time goes (run {i + 1})"] = line
    result = report.build(runs, meta)
    md_path, json_path = report.write(result, args.out)
    _say("")
    _say(report.markdown(result))
    _say(f"written: {md_path} {json_path} {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
