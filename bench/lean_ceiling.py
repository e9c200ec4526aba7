"""Issue 15's yardstick: redis-benchmark EVALSHA of a lean one-charge script, one charge a call.

bench/lean_charge.lua does the work any charge must do (HGET the balance, HINCRBY balance
and spent, XADD one journal entry, SET the charge record with a TTL) and nothing the product
adds (catalog, idempotency, events). Run like bench/ceiling.py: the same clients and
pipeline depth, a unique entry id and record key per call (`__rand_int__` drawn twice), and
the figure counts real work: the wallet's `spent` total and the journal's length must both
grow by exactly the calls sent, else the row says NOT VERIFIED and uses the work done.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from bench import ceiling, workload
from meter import bounds

SCRIPT = Path(__file__).resolve().with_name("lean_charge.lua")
WALLET_FUNDS = workload.FUNDS  # no run can drain it


def _keys(prefix: str) -> tuple[str, str, str]:
    """Wallet, journal, and the record key's stem (one hash tag: a cluster would take it too)."""
    tag = "{lean}"
    return f"{prefix}:{tag}:wallet", f"{prefix}:{tag}:journal", f"{prefix}:{tag}:charge:"


def command(sha: str, prefix: str) -> list[str]:
    """The EVALSHA argv of one lean charge with unique ids (a fresh nonce per redis-benchmark
    process, which may draw the same random sequence every time)."""
    wallet, journal, record = _keys(prefix)
    entry_id = f"{uuid.uuid4().hex[:8]}-{ceiling.RAND}-{ceiling.RAND}"
    args = [entry_id, str(workload.COST), str(bounds.IDEMPOTENCY_TTL_S)]
    return ["EVALSHA", sha, "3", wallet, journal, record + entry_id, *args]


def _work_done(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """(credits spent, journal entries) so far."""
    wallet, journal, _ = _keys(prefix)
    return int(client.hget(wallet, "spent") or 0), int(client.xlen(journal))


def measure(
    url: str,
    seconds: float,
    *,
    clients: int = ceiling.CLIENTS,
    pipeline: int = ceiling.PIPELINE,
    calls: int | None = None,
    prefix: str = workload.PREFIX,
) -> dict[str, object]:
    """Lean charges/s of redis-benchmark on one wallet; skipped without the binary."""
    exe = ceiling.binary()
    if exe is None:
        return {"skipped": "skipped: redis-benchmark not found"}
    server = ceiling.Server.of(url)
    client = redis.Redis.from_url(url)
    wallet, journal, _ = _keys(prefix)
    client.delete(wallet, journal)
    client.hset(wallet, mapping={"balance": WALLET_FUNDS, "spent": 0})
    sha = str(client.script_load(SCRIPT.read_text()))
    if calls is None:  # size the run to `seconds` from a short one
        rate = ceiling.run_benchmark(
            exe, server, ceiling.CALIBRATE_CALLS, clients, pipeline, command(sha, prefix)
        )
        calls = max(ceiling.CALIBRATE_CALLS, int(rate * seconds))
    step = clients * pipeline  # redis-benchmark sends whole pipelines
    calls = max(step, calls // step * step)
    spent0, entries0 = _work_done(client, prefix)
    t0 = time.perf_counter()
    rps = ceiling.run_benchmark(exe, server, calls, clients, pipeline, command(sha, prefix))
    wall = time.perf_counter() - t0
    spent1, entries1 = _work_done(client, prefix)
    client.close()
    charged = (spent1 - spent0) // workload.COST
    verified = charged == calls == entries1 - entries0
    # redis-benchmark's own clock; if it did other work than asked, ours (slower)
    elapsed = calls / rps if verified else wall
    fig: dict[str, object] = {
        "value": min(charged, entries1 - entries0) / elapsed,
        "unit": "charges/s",
        "calls": calls,
        "charges": charged,
        "elapsed_s": elapsed,
        "verified": verified,
        "note": (
            f"bench/lean_charge.lua (HGET, 2x HINCRBY, XADD, SET EX), 1 charge per EVALSHA, "
            f"-c {clients} -P {pipeline}, one wallet; checked: spent and XLEN grew by the calls"
        ),
    }
    if not verified:
        fig["note"] = f"{fig['note']}; MISMATCH: {calls} calls, {charged} charged, " + (
            f"{entries1 - entries0} journaled"
        )
    return fig
