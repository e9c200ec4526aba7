"""Every bench function at a tiny size, against the test Redis and the test SQL: the report
has each row with a positive number (or the documented skip text), verified balances."""

from __future__ import annotations

from pathlib import Path

from bench import ceiling, clients, memory, report, sql_baseline

SECONDS = 0.3


def _sql_url(database_url: str) -> str:
    """The fixture's PostgreSQL, or its SQLite file (the baseline then uses BEGIN IMMEDIATE)."""
    assert database_url.startswith(("postgresql", "sqlite:///")), database_url
    return database_url


def test_every_bench_function_fills_its_row(
    redis_url: str, database_url: str, key_prefix: str, tmp_path: Path
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

    for key, _ in report.ROWS:
        fig = run[key]
        if key == "ceiling" and ceiling.binary() is None:
            assert fig == {"skipped": "skipped: redis-benchmark not found"}
            continue
        assert fig["value"] > 0, (key, fig)
        assert fig.get("verified", True), (key, fig)
    for key in ("async_spread", "async_hot", "sync_throughput"):
        assert not run[key]["errors"], run[key]

    result = report.build([run], {"started_utc": "2000-01-01T00:00:00Z"})
    text = report.markdown(result)
    for _, label in report.ROWS:
        assert label in text
    for name, _, _ in report.RATIOS:
        if name.startswith("async") and "ceiling" in name and ceiling.binary() is None:
            continue
        assert result["ratios"][name]["median"] > 0, name
    md_path, json_path = report.write(result, tmp_path)
    assert md_path.read_text() == (tmp_path / "latest.md").read_text() == text
    assert json_path.stat().st_size > 0


def test_sql_baseline_reports_a_missing_postgresql() -> None:
    fig = sql_baseline.measure(0.1, hot=True, url="postgresql://postgres@127.0.0.1:1/none")
    assert fig == {"skipped": "skipped: no PostgreSQL"}
