"""Issue 15's HTTP figure in depth: `POST /v1/charges` against `GET /healthz` of the same server,
with where the Redis work goes. `make bench` measures the two rates (bench/http.py); this
command, run apart, adds the Redis commands per charge and compares worker counts.

One `creditmeter api --workers W` (bench.http's setup: migrated SQLite, a meter key, funded
accounts in Redis), loaded by wrk with bench.http's CONNECTIONS connections: first GET
/healthz, then POST /v1/charges (a unique Idempotency-Key each, bench.http's ACCOUNTS).

Redis commands per charge, two ways:
- `INFO commandstats` over the measured charge run, divided by the charges applied: every
  command, those that scripts run (HGET, XADD...) included; EVALSHA per charge below 1
  shows the AsyncMeter merging concurrent requests into one script call.
- MONITOR over a short extra run (not measured: MONITOR slows Redis): the commands clients
  sent, scripts' inner calls left out, per charge. The minimum is the script call alone.

    python -m bench.http_vs_healthz --workers 1 2 --seconds 8 [--profile DIR]
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import http, workload
from bench.server import PrivateRedis, cpu_seconds, redis_pid

SECONDS = 8
WARMUP_S = 2
MONITOR_S = 2  # the short run whose commands MONITOR lists
MONITOR_START_S = 0.3  # redis-cli connects and subscribes before the load starts
# A MONITOR line: `1700000000.123456 [0 127.0.0.1:5555] "EVALSHA" ...`; scripts' calls
# show `[0 lua]` instead of the client's address.
_MONITOR_RE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"')


@dataclass
class Comparison:
    workers: int
    healthz: http.Load
    charge: http.Load
    charges: int  # applied during the measured charge run (balances, not wrk's count)
    commandstats: dict[str, int]  # calls per command during the measured charge run
    sent: dict[str, int] = field(default_factory=dict)  # MONITOR: commands clients sent
    sent_charges: int = 0  # charges applied during the MONITOR run
    profile: str = ""
    cpu_us: dict[str, float] = field(default_factory=dict)  # server CPU per request, by path
    redis_cpu_us: float = 0.0  # Redis CPU per charge during the measured charge run
    reads: int = 0  # Redis read events (INFO total_reads_processed) during the charge run

    @property
    def ratio(self) -> float:
        return self.charge.rate / self.healthz.rate if self.healthz.rate else 0.0

    def per_charge(self, counts: dict[str, int], charges: int) -> dict[str, float]:
        return {k: v / charges for k, v in sorted(counts.items())} if charges else {}

    def lines(self) -> list[str]:
        c, h = self.charge, self.healthz
        stats = self.per_charge(self.commandstats, self.charges)
        sent = self.per_charge(self.sent, self.sent_charges)
        out = [
            f"workers={self.workers}: charge {c.rate:,.0f} req/s (p50 {c.p50_ms:.1f} ms, "
            f"p99 {c.p99_ms:.1f} ms, errors {c.errors or 'none'}) vs healthz {h.rate:,.0f} "
            f"req/s (p99 {h.p99_ms:.1f} ms) = {self.ratio:.2f}x",
            f"  charges applied {self.charges:,} for {c.ok:,} answered 2xx; API CPU per request "
            f"{self.cpu_us.get(http.CHARGE_PATH, 0):,.0f} us charge vs "
            f"{self.cpu_us.get(http.HEALTHZ_PATH, 0):,.0f} us healthz; Redis CPU "
            f"{self.redis_cpu_us:,.0f} us per charge; Redis socket reads per charge "
            f"{self.reads / max(1, self.charges):.2f} (pipelined rounds: fewer is better)",
            "  commandstats per charge (script calls included): "
            + ", ".join(f"{k} {v:.2f}" for k, v in stats.items())
            + f"; total {sum(stats.values()):.2f}",
            f"  sent by clients per charge (MONITOR, {self.sent_charges} charges): "
            + ", ".join(f"{k} {v:.3f}" for k, v in sent.items())
            + f"; total {sum(sent.values()):.3f}",
        ]
        if self.profile:
            out.append(f"  py-spy: {self.profile}")
        return out


def commandstats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def reads_processed(client: redis.Redis) -> int:
    """Read events Redis handled so far: one per batch of commands a client sent at once."""
    info: dict[str, Any] = client.info("stats")
    return int(info["total_reads_processed"])


def sent_commands(monitor_text: str) -> dict[str, int]:
    """Commands clients sent (not scripts' inner calls), by name, from MONITOR output."""
    counts: collections.Counter[str] = collections.Counter()
    for line in monitor_text.splitlines():
        m = _MONITOR_RE.match(line)
        if m and m.group(1) != "lua":
            counts[m.group(2).lower()] += 1
    return dict(counts)


def _monitored(s: http.Setup, base: str, meter: Any, out: Path) -> tuple[dict[str, int], int]:
    before = workload.spent(meter, s.names)
    with open(out, "wb") as sink:
        mon = subprocess.Popen(["redis-cli", "-u", s.redis_url, "monitor"], stdout=sink)
        try:
            time.sleep(MONITOR_START_S)
            s.load(base, http.CHARGE_PATH, MONITOR_S)
            time.sleep(http.SETTLE_S)
        finally:
            mon.terminate()
            mon.wait()
    charged = (workload.spent(meter, s.names) - before) // workload.COST
    return sent_commands(out.read_text(errors="replace")), charged


def compare(
    redis_url: str,
    seconds: int = SECONDS,
    *,
    workers: int = http.WORKERS,
    connections: int = http.CONNECTIONS,
    accounts: int = http.ACCOUNTS,
    warmup_s: int = WARMUP_S,
    prefix: str = workload.PREFIX,
    profile_out: Path | None = None,
    say: http.Say = print,
) -> Comparison:
    wrk = http.find_wrk(install=True, say=say)
    if wrk is None:
        raise RuntimeError(http.SKIP_NO_WRK)
    client = redis.Redis.from_url(redis_url)
    with tempfile.TemporaryDirectory(prefix="creditmeter-healthz-") as tmp:
        s = http.Setup(
            redis_url=redis_url,
            prefix=prefix,
            workers=workers,
            connections=connections,
            threads=http.WRK_THREADS,
            accounts=accounts,
            seconds=seconds,
            warmup_s=warmup_s,
            wrk=wrk,
            dir=Path(tmp),
        )
        meter = http._prepare(s)
        with http.serving(http.api_argv(workers), s.env, "/readyz", s.dir / "api.log") as server:
            say(f"  workers={workers}: pids {server.pids()}; warm-up {warmup_s} s each")
            s.load(server.base, http.CHARGE_PATH, warmup_s)
            s.load(server.base, http.HEALTHZ_PATH, warmup_s, method="GET")
            time.sleep(http.SETTLE_S)
            cpu0 = server.cpu_s()
            healthz = s.load(server.base, http.HEALTHZ_PATH, seconds, method="GET")
            cpu1 = server.cpu_s()
            spent0 = workload.spent(meter, s.names)
            client.config_resetstat()
            rpid = redis_pid(redis_url)
            redis0, reads0 = cpu_seconds(rpid), reads_processed(client)
            charge = s.load(server.base, http.CHARGE_PATH, seconds)
            cpu2, redis1, reads1 = server.cpu_s(), cpu_seconds(rpid), reads_processed(client)
            time.sleep(http.SETTLE_S)
            stats = commandstats(client)
            charges = (workload.spent(meter, s.names) - spent0) // workload.COST
            result = Comparison(workers, healthz, charge, charges, stats)
            result.cpu_us = {
                http.HEALTHZ_PATH: (cpu1 - cpu0) / max(1, healthz.requests) * 1e6,
                http.CHARGE_PATH: (cpu2 - cpu1) / max(1, charge.requests) * 1e6,
            }
            result.redis_cpu_us = (redis1 - redis0) / max(1, charges) * 1e6
            result.reads = reads1 - reads0
            result.sent, result.sent_charges = _monitored(
                s, server.base, meter, s.dir / "monitor.txt"
            )
            if profile_out is not None:
                result.profile = http.profile(s, server, profile_out, say)
        meter.redis.close()
    client.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_vs_healthz", description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=int, default=SECONDS)
    parser.add_argument("--connections", type=int, default=http.CONNECTIONS)
    parser.add_argument("--accounts", type=int, default=http.ACCOUNTS)
    parser.add_argument("--redis-url", help="default: a private redis-server, no AOF")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks go to this directory")
    args = parser.parse_args(argv)
    server = None if args.redis_url else PrivateRedis()
    url = args.redis_url or server.start()  # type: ignore[union-attr]
    try:
        for w in args.workers:
            out = args.profile / f"http-charge-w{w}.txt" if args.profile else None
            c = compare(
                url,
                args.seconds,
                workers=w,
                connections=args.connections,
                accounts=args.accounts,
                profile_out=out,
            )
            print("\n".join(c.lines()), flush=True)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
