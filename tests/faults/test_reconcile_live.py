"""Issue 12 item 8: `reconcile --repair` is safe while charging goes on.

Threads charge twenty wallets through meter.Meter while a worker-like thread flushes and
reconcile --repair runs three times. Only the one wallet that really drifted (a grant edited
in Redis by hand, never charged) is reported and repaired; the busy wallets, whose SQL copy
merely lags the journal, are neither reported nor rewritten. Afterwards every acknowledged
charge is in SQL exactly once, each balance is its grant minus its charges, and SQL == Redis.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import func, select

from meter import Meter, Tool
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.catalog import save_tools
from sync.db import engine_for
from sync.flush import Flusher
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.models import T_LEDGER
from sync.reconcile import reconcile
from tests.servers import PrivatePostgres, postgres_available, private_redis
from tests.sync.invariants import assert_in_sync

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

BUCKETS = 4
WALLETS = 20
CHARGERS = 4
GRANT = 1_000_000
RECONCILE_RUNS = 3
WORKER_PAUSE_S = 0.05  # the worker-like flusher's pause between passes
CHARGE_PAUSE_S = 0.02  # per charging thread: a steady load, not a GIL monopoly


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not postgres_available():
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    server = private_redis(tmp_path_factory.mktemp("redis"), appendonly=False)
    redis_url = server.start()
    try:
        with PrivatePostgres() as pg:
            upgrade(pg.url)
            yield redis_url, pg.url
    finally:
        server.stop()


def _charge(
    meter: Meter,
    tool: Tool,
    accounts: list[str],
    stop: threading.Event,
    out: list[tuple[str, str]],
    seed: int,
) -> None:
    i = seed
    while not stop.is_set():
        a = accounts[i % len(accounts)]
        out.append((a, meter.charge(a, tool.name).id))
        i += 7
        time.sleep(CHARGE_PAUSE_S)


def _flush_until(flusher: Flusher, stop: threading.Event) -> None:
    while not stop.is_set():
        flusher.flush_all()
        time.sleep(WORKER_PAUSE_S)


@pytest.mark.timeout(110)
def test_repair_while_charging_rewrites_only_the_drifted_wallet(
    servers: tuple[str, str],
) -> None:
    redis_url, sql_url = servers
    engine = engine_for(sql_url)
    keys = Keys(prefix="r" + uuid.uuid4().hex[:10], buckets=BUCKETS)
    tool = Tool(f"T{keys.prefix.upper()}", 1, "credits")
    save_tools(engine, [tool])
    client: redis.Redis = sync_client(redis_url)
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    meter.set_tools([tool])
    busy = [f"live-{uuid.uuid4().hex[:6]}-{i}" for i in range(WALLETS)]
    drifted = f"drift-{uuid.uuid4().hex[:6]}"
    for a in [*busy, drifted]:
        meter.grant(a, "credits", GRANT, category="paid")
    grant = meter.grant(drifted, "credits", 50, category="paid")
    Flusher(client, engine, keys).flush_all()
    client.hset(keys.wallet(drifted, "credits"), f"g:{grant.grant_id}", "45|50|0|p")

    stop = threading.Event()
    charged: list[list[tuple[str, str]]] = [[] for _ in range(CHARGERS)]
    threads = [
        threading.Thread(
            target=_charge,
            args=(
                Meter(client, keys=keys, loader=SqlLoader(engine, keys)),
                tool,
                busy,
                stop,
                charged[n],
                n,
            ),
        )
        for n in range(CHARGERS)
    ]
    worker_flusher = Flusher(client, engine, keys)
    threads.append(threading.Thread(target=_flush_until, args=(worker_flusher, stop)))
    for t in threads:
        t.start()
    reports = []
    try:
        time.sleep(0.5)
        for _ in range(RECONCILE_RUNS):
            started = time.monotonic()
            reports.append(reconcile(client, engine, keys, repair=True))
            print(f"reconcile --repair took {time.monotonic() - started:.2f} s")
    finally:
        stop.set()
        for t in threads:
            t.join()
        worker_flusher.close()

    acknowledged = [pair for per_thread in charged for pair in per_thread]
    assert len(acknowledged) > WALLETS * 5
    print(
        f"\n{len(acknowledged)} charges acknowledged during {RECONCILE_RUNS} repairs; "
        f"busy (not compared) per run: {[len(r.busy) for r in reports]}"
    )
    assert_in_sync(client, engine, keys)
    ids = [i for _, i in acknowledged]
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_LEDGER.c.id, func.count())
            .where(T_LEDGER.c.id.in_(ids))
            .group_by(T_LEDGER.c.id)
        ).all()
    assert sorted(i for i, _ in rows) == sorted(ids)
    assert {n for _, n in rows} == {1}
    per_account = Counter(a for a, _ in acknowledged)
    for a in busy:
        assert meter.balance(a, ["credits"]).wallet("credits").balance == GRANT - per_account[a]
    assert meter.balance(drifted, ["credits"]).wallet("credits").balance == GRANT + 50
    first = reports[0]
    assert {(d.account_id, d.what) for d in first.differences} == {
        (drifted, "balance"),
        (drifted, f"grant {grant.grant_id}"),
    }
    assert first.repaired == [(drifted, "credits")]
    for later in reports[1:]:
        assert later.differences == [] and later.repaired == []
    for report in reports:  # every wallet was looked at; a busy one is not compared
        assert report.wallets_compared + len(report.busy) == WALLETS + 1
        assert report.wallets_compared > WALLETS // 2

    client.close()
