"""SPEC §10.3: the seeds' design, one SQL transaction per charge, as the baseline.

BEGIN; SELECT balance ... FOR UPDATE; check; UPDATE; INSERT a ledger row; COMMIT — on
PostgreSQL (psycopg 3). The same code runs on SQLite (BEGIN IMMEDIATE takes the write lock
instead of FOR UPDATE) so the smoke test needs no server. A few connections, each in its
own thread, charge either one hot account or accounts spread over a set.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench import workload

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
URL_ENV = "CREDITMETER_BENCH_DATABASE_URL"
CONNECTIONS = 4
SPREAD_ACCOUNTS = 1000
START_BALANCE = 2**62  # no run can drain it
CONNECT_TIMEOUT_S = 3

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS bench_wallets (account_id TEXT PRIMARY KEY, "
    "balance BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_ledger (entry_id TEXT PRIMARY KEY, "
    "account_id TEXT NOT NULL, tool TEXT NOT NULL, amount BIGINT NOT NULL, "
    "balance_after BIGINT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, "
    "created_ms BIGINT NOT NULL)",
]


class NoDatabase(Exception):
    """The database did not answer."""


def database_url() -> str:
    return os.environ.get(URL_ENV, DEFAULT_URL)


@dataclass(frozen=True)
class Dialect:
    url: str

    @property
    def sqlite_path(self) -> str | None:
        if self.url.startswith("sqlite:///"):
            return self.url[len("sqlite:///") :]
        return None

    @property
    def name(self) -> str:
        return "sqlite" if self.sqlite_path is not None else "postgresql"

    def connect(self) -> Any:
        path = self.sqlite_path
        if path is not None:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        import psycopg

        url = self.url.replace("postgresql+psycopg://", "postgresql://")
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            raise NoDatabase(str(exc)) from exc

    def sql(self, text: str) -> str:
        return text.replace("%s", "?") if self.sqlite_path is not None else text

    @property
    def begin(self) -> str:
        return "BEGIN IMMEDIATE" if self.sqlite_path is not None else "BEGIN"

    @property
    def lock(self) -> str:
        return "" if self.sqlite_path is not None else " FOR UPDATE"


def _setup(d: Dialect, accounts: list[str]) -> str:
    conn = d.connect()
    try:
        for stmt in _SCHEMA:
            conn.execute(stmt)
        conn.execute("DELETE FROM bench_ledger")
        conn.execute("DELETE FROM bench_wallets")
        conn.execute(d.begin)
        for a in accounts:
            conn.execute(d.sql("INSERT INTO bench_wallets VALUES (%s, %s)"), (a, START_BALANCE))
        conn.execute("COMMIT")
        if d.sqlite_path is None:
            conn.execute("ANALYZE bench_wallets")
            return str(conn.execute("SHOW synchronous_commit").fetchone()[0])
        return str(conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        conn.close()


def _charge(
    conn: Any, d: Dialect, account: str, cost: int, select: str, update: str, insert: str
) -> bool:
    """One charge in one transaction; False (rolled back) when the balance is short."""
    conn.execute(d.begin)
    try:
        (balance,) = conn.execute(select, (account,)).fetchone()
        if balance < cost:
            conn.execute("ROLLBACK")
            return False
        conn.execute(update, (cost, account))
        entry = str(uuid.uuid4())
        conn.execute(
            insert,
            (entry, account, workload.TOOL, -cost, balance - cost, entry, int(time.time() * 1000)),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def measure(
    seconds: float,
    *,
    hot: bool,
    url: str | None = None,
    connections: int = CONNECTIONS,
    accounts: int = SPREAD_ACCOUNTS,
    no_commit_wait: bool = False,
) -> dict[str, Any]:
    """Charges/s of one-transaction-per-charge; skipped when PostgreSQL does not answer.

    no_commit_wait: PostgreSQL synchronous_commit=off (SQLite synchronous=OFF), the fairer
    match for the bench Redis, which runs without AOF.
    """
    d = Dialect(url or database_url())
    names = ["sql-hot"] if hot else workload.account_names(accounts, "sql")
    try:
        sync_setting = _setup(d, names)
    except NoDatabase:
        return {"skipped": f"skipped: no {'PostgreSQL' if d.name == 'postgresql' else d.name}"}
    select = d.sql(f"SELECT balance FROM bench_wallets WHERE account_id = %s{d.lock}")
    update = d.sql("UPDATE bench_wallets SET balance = balance - %s WHERE account_id = %s")
    insert = d.sql("INSERT INTO bench_ledger VALUES (%s, %s, %s, %s, %s, %s, %s)")
    counts = [0] * connections
    failures: list[BaseException] = []
    stop = threading.Event()
    start_gate = threading.Barrier(connections + 1)

    def worker(i: int) -> None:
        conn = d.connect()
        try:
            if no_commit_wait:
                conn.execute(
                    "SET synchronous_commit = off"
                    if d.name == "postgresql"
                    else "PRAGMA synchronous = OFF"
                )
            start_gate.wait()
            n = i
            while not stop.is_set():
                if _charge(conn, d, names[n % len(names)], workload.COST, select, update, insert):
                    counts[i] += 1
                n += connections
        except BaseException as exc:
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0  # includes the last transactions, counted too
    ok = sum(counts)
    conn = d.connect()
    try:
        spent = conn.execute(
            d.sql("SELECT COALESCE(SUM(%s - balance), 0) FROM bench_wallets"), (START_BALANCE,)
        ).fetchone()[0]
        rows = conn.execute("SELECT COUNT(*) FROM bench_ledger").fetchone()[0]
    finally:
        conn.close()
    if failures:
        raise RuntimeError(f"SQL baseline worker failed: {failures[0]!r}") from failures[0]
    commit = "synchronous_commit" if d.name == "postgresql" else "PRAGMA synchronous"
    return {
        "value": ok / elapsed,
        "unit": "charges/s",
        "charges": ok,
        "elapsed_s": elapsed,
        "verified": int(spent) == ok * workload.COST and rows == ok,
        "note": f"{d.name}, {connections} connections, "
        + ("1 hot account" if hot else f"{len(names)} accounts")
        + f", {commit}={'off' if no_commit_wait else sync_setting}",
    }
