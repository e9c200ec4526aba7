"""SPEC §10.1: redis-benchmark EVALSHA of the project's own charge script, one charge per call.

Every call is a real charge: `__rand_int__` (replaced independently per occurrence, 12 digits
each) makes the idempotency record key, charge record key and entry id unique (two draws
each, so ~10^24 values). The count of real charges is the balance drop, not the request
count, and the rate is that count over redis-benchmark's own elapsed time.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench import workload
from meter import bounds, ops, scripts
from meter.signatures import CHARGE

BINARY = "redis-benchmark"
RAND = "__rand_int__"
RAND_SPACE = 2**31 - 1  # redis-benchmark -r takes an int
CLIENTS = 16
PIPELINE = 32
CALIBRATE_CALLS = 20_000


def binary() -> str | None:
    return shutil.which(BINARY)


def command(meter: object, account: str) -> list[str]:
    """The EVALSHA argv of one charge of TOOL on account, with random unique ids.

    A fresh nonce per invocation: redis-benchmark may draw the same random sequence in every
    process, and a repeated idempotency key is a replay, not a charge.
    """
    keys = meter.keys  # type: ignore[attr-defined]
    bucket = keys.bucket(account)
    nonce = uuid.uuid4().hex[:8]
    uniq = f"{nonce}-{RAND}-{RAND}"
    idem = f"rb-{nonce}-{RAND}{RAND}"
    fp = ops.fingerprint("charge", account, workload.TOOL, 1, "", "")
    call_keys = CHARGE.key_list(
        catalog=keys.catalog(bucket),
        journal=keys.journal(bucket),
        charges=[
            {
                "wallet": keys.wallet(account, workload.CREDIT_TYPE),
                "idempotency": keys.idempotency(account, idem),
                "record": keys.charge(bucket, uniq),
                "events": keys.events(bucket),
            }
        ],
    )
    args = CHARGE.arg_list(
        now_ms=str(int(time.time() * 1000)),
        idempotency_ttl_s=str(bounds.IDEMPOTENCY_TTL_S),
        charges=[
            {
                "entry_id": uniq,
                "account_id": account,
                "credit_type": workload.CREDIT_TYPE,
                "tool": workload.TOOL,
                "quantity": "1",
                "fingerprint": fp,
                "idempotency_key": idem,
                "description": "",
                "metadata": "",
            }
        ],
    )
    return ["EVALSHA", scripts.get("charge").sha, str(len(call_keys)), *call_keys, *args]


@dataclass(frozen=True)
class Server:
    """Where redis-benchmark connects: the URL's host, port and database number."""

    host: str
    port: int
    db: int

    @classmethod
    def of(cls, url: str) -> Server:
        where = urlsplit(url)
        db = where.path.strip("/")
        return cls(where.hostname or "127.0.0.1", where.port or 6379, int(db) if db else 0)


def run_benchmark(
    exe: str, server: Server, calls: int, clients: int, pipeline: int, argv: list[str]
) -> float:
    """Runs redis-benchmark; returns its requests/s."""
    out = subprocess.run(
        [
            exe,
            "-h",
            server.host,
            "-p",
            str(server.port),
            "--dbnum",
            str(server.db),
            "-n",
            str(calls),
            "-c",
            str(clients),
            "-P",
            str(pipeline),
            "-r",
            str(RAND_SPACE),
            "--csv",
            *argv,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1])


def measure(
    url: str,
    seconds: float,
    *,
    clients: int = CLIENTS,
    pipeline: int = PIPELINE,
    calls: int | None = None,
    prefix: str = workload.PREFIX,
) -> dict[str, object]:
    """Charges/s of redis-benchmark on one hot account; skipped without the binary."""
    exe = binary()
    if exe is None:
        return {"skipped": "skipped: redis-benchmark not found"}
    server = Server.of(url)
    account = "ceiling-hot"
    meter = workload.prepare(url, [account], prefix)
    argv = command(meter, account)
    if calls is None:  # size the run to `seconds` from a short one
        rate = run_benchmark(exe, server, CALIBRATE_CALLS, clients, pipeline, argv)
        argv = command(meter, account)
        calls = max(CALIBRATE_CALLS, int(rate * seconds))
    step = clients * pipeline  # redis-benchmark sends whole pipelines
    calls = max(step, calls // step * step)
    before = workload.spent(meter, [account])
    t0 = time.perf_counter()
    rps = run_benchmark(exe, server, calls, clients, pipeline, argv)
    wall = time.perf_counter() - t0
    charged = (workload.spent(meter, [account]) - before) // workload.COST
    meter.redis.close()
    # redis-benchmark's own clock; if it sent another count than asked, use ours (slower)
    elapsed = calls / rps if charged == calls else wall
    return {
        "value": charged / elapsed,
        "unit": "charges/s",
        "calls": calls,
        "charges": charged,
        "elapsed_s": elapsed,
        "verified": charged == calls,
        "note": f"1 charge per EVALSHA, -c {clients} -P {pipeline}, hot account",
    }
