"""Every bench function at a tiny size, against the test Redis and the test SQL: the report
has each row with a positive number (or the documented skip text), verified balances.

The flush rows need PostgreSQL for COPY: the test SQL when it is PostgreSQL (in a schema of
the test's own, dropped after), else a private cluster, else (no PostgreSQL binaries) a
SQLite file, where copy_rate reports its skip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import ceiling, clients, flush, memory, report, sql_baseline
from tests.servers import PrivatePostgres, postgres_available

SECONDS = 0.3
FLUSH_SIZES: dict[str, Any] = {
    "entries": 300,
    "accounts": 8,
    "lag_rate": 2000,
    "lag_seconds": 1.0,
    "outage_rate": 2000,
    "outage_seconds": 1.0,
}


@pytest.fixture
def flush_sql(
    database_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[tuple[str, str | None]]:
    """(URL, schema) the flush rows run on."""
    if database_url.startswith("postgresql"):
        schema = f"bench_{key_prefix}"
        try:
            yield database_url, schema
        finally:
            flush.drop_schema(database_url, schema)
    elif postgres_available():
        with PrivatePostgres() as pg:
            yield pg.url, None
    else:
        yield f"sqlite:///{tmp_path / 'flush.db'}", None


def _sql_url(database_url: str) -> str:
    """The fixture's PostgreSQL, or its SQLite file (the baseline then uses BEGIN IMMEDIATE)."""
    assert database_url.startswith(("postgresql", "sqlite:///")), database_url
    return database_url


def test_every_bench_function_fills_its_row(
    redis_url: str,
    database_url: str,
    key_prefix: str,
    tmp_path: Path,
    flush_sql: tuple[str, str | None],
) -> None:
    run: report.Run = {}
    run["ceiling"] = ceiling.measure(redis_url, SECONDS, calls=512, prefix=key_prefix)
    run["async_spread"] = clients.async_throughput(
        redis_url, SECONDS, hot=False, concurrency=50, accounts=20, warmup_s=0.05, prefix=key_prefix
    )
    run["async_hot"] = clients.async_throughput(
        redis_url, SECONDS, hot=True, concurrency=50, warmup_s=0.05, prefix=key_prefix
    )
    sync = clients.sync_charges(redis_url, SECONDS, warmup=10, prefix=key_prefix)
    run["sync_throughput"] = sync
    run["sync_p50"] = {"value": sync["p50_ms"], "unit": "ms"}
    run["sync_p99"] = {"value": sync["p99_ms"], "unit": "ms"}
    sql_url = _sql_url(database_url)
    for key, kw in (
        ("sql_hot", {"hot": True}),
        ("sql_spread", {"hot": False}),
        ("sql_hot_nowait", {"hot": True, "no_commit_wait": True}),
    ):
        run[key] = sql_baseline.measure(SECONDS, url=sql_url, connections=2, accounts=20, **kw)
    run.update(memory.measure(redis_url, journal_charges=20, prefix=key_prefix))
    flush_url, schema = flush_sql
    shown: list[str] = []
    run.update(
        flush.measure(
            redis_url,
            flush_url,
            schema=schema,
            on_row=lambda key, fig, took: shown.append(key),
            **FLUSH_SIZES,
        )
    )
    flush_rows = ["flush_rate", "copy_rate", "flush_lag_p50", "flush_lag_p99"]
    assert shown == [*flush_rows, "drain_after_outage_s"]  # each row reported as measured

    for key, _ in report.ROWS:
        fig = run[key]
        if key == "ceiling" and ceiling.binary() is None:
            assert fig == {"skipped": "skipped: redis-benchmark not found"}
            continue
        if key == "copy_rate" and not flush_url.startswith("postgresql"):
            assert fig == {"skipped": "skipped: COPY needs PostgreSQL"}
            continue
        assert fig["value"] > 0, (key, fig)
        assert fig.get("verified", True), (key, fig)
    for key in ("async_spread", "async_hot", "sync_throughput"):
        assert not run[key]["errors"], run[key]
    assert run["flush_rate"]["entries"] == FLUSH_SIZES["entries"]
    for key in ("flush_lag_p99", "drain_after_outage_s"):
        assert not run[key]["errors"], run[key]
        assert run[key]["achieved_rate"] > 0, run[key]
    assert run["flush_lag_p50"]["value"] <= run["flush_lag_p99"]["value"]
    assert run["flush_lag_p99"]["samples"] > 0 and run["flush_lag_p99"]["missing"] == 0
    assert run["drain_after_outage_s"]["backlog"] > 0

    result = report.build([run], {"started_utc": "2000-01-01T00:00:00Z"})
    text = report.markdown(result)
    for _, label in report.ROWS:
        assert label in text
    for name, _, _ in report.RATIOS:
        if name.startswith("async") and "ceiling" in name and ceiling.binary() is None:
            continue
        if name == "flush_rate / copy_rate" and not flush_url.startswith("postgresql"):
            continue
        assert result["ratios"][name]["median"] > 0, name
    statuses = {t["target"]: t["status"] for t in result["targets"]}
    assert statuses["flush lag p99 <= 1000 ms at 20,000 charges/s"] in ("met", "missed")
    md_path, json_path = report.write(result, tmp_path)
    assert md_path.read_text() == (tmp_path / "latest.md").read_text() == text
    assert json_path.stat().st_size > 0


def test_sql_baseline_reports_a_missing_postgresql() -> None:
    fig = sql_baseline.measure(0.1, hot=True, url="postgresql://postgres@127.0.0.1:1/none")
    assert fig == {"skipped": "skipped: no PostgreSQL"}


def test_flush_rows_report_a_missing_postgresql(redis_url: str) -> None:
    figs = flush.measure(redis_url, "postgresql://postgres@127.0.0.1:1/none")
    assert set(figs) == {
        "flush_rate",
        "copy_rate",
        "flush_lag_p50",
        "flush_lag_p99",
        "drain_after_outage_s",
    }
    assert all(f == {"skipped": "skipped: no PostgreSQL"} for f in figs.values())
