"""Every bench function at a tiny size, against the test Redis and the test SQL: the report
has each row with a positive number (or the documented skip text), verified balances. Then
`python -m bench --quick` whole, as `make bench` runs it: every row of the report and every
line of issue 15's table in its result JSON and output.

The HTTP rows start `creditmeter api` (one worker) and load GET /healthz and POST
/v1/charges for a second each with wrk, or, where wrk is not installed (the function test
never installs it), with bench.http's Python load generator: the rows are then filled but
say so.

The flush rows need PostgreSQL for COPY: the test SQL when it is PostgreSQL (in a schema of
the test's own, dropped after), else a private cluster, else (no PostgreSQL binaries) a
SQLite file, where copy_rate reports its skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import (
    ceiling,
    clients,
    cluster,
    cluster_server,
    flush,
    http,
    lean_ceiling,
    memory,
    report,
    sql_baseline,
)
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
# One worker: starts fastest (no uvicorn supervisor); tests/api run several.
HTTP_SIZES: dict[str, Any] = {"accounts": 10, "warmup_s": 1, "connections": 4, "workers": 1}
# Rows only the whole run fills (test_quick_bench_prints_every_row): the cluster starts its
# own servers, and flush_lag_achieved is taken from the lag row by bench.__main__.
WHOLE_RUN_ROWS = {*cluster.ROW_KEYS, "flush_lag_achieved"}
REPO = Path(__file__).resolve().parents[2]
QUICK_BENCH_TIMEOUT_S = 600  # ~1 minute quiet; CI machines are slower and shared


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
    run["lean_ceiling"] = lean_ceiling.measure(redis_url, SECONDS, calls=512, prefix=key_prefix)
    run["async_spread"] = clients.async_throughput(
        redis_url, SECONDS, hot=False, concurrency=50, accounts=20, warmup_s=0.05, prefix=key_prefix
    )
    run["async_hot"] = clients.async_throughput(
        redis_url, SECONDS, hot=True, concurrency=50, warmup_s=0.05, prefix=key_prefix
    )
    run["async_64x512"] = clients.async_throughput(
        redis_url,
        SECONDS,
        hot=False,
        concurrency=512,
        accounts=64,
        warmup_s=0.05,
        prefix=key_prefix,
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
        if key in http.ROW_KEYS:  # test_http_rows_fill_theirs (servers take their own time)
            continue
        if key in WHOLE_RUN_ROWS:
            continue
        fig = run[key]
        if key in ("ceiling", "lean_ceiling") and ceiling.binary() is None:
            assert fig == {"skipped": "skipped: redis-benchmark not found"}
            continue
        if key == "copy_rate" and not flush_url.startswith("postgresql"):
            assert fig == {"skipped": "skipped: COPY needs PostgreSQL"}
            continue
        assert fig["value"] > 0, (key, fig)
        assert fig.get("verified", True), (key, fig)
    for key in ("async_spread", "async_hot", "async_64x512", "sync_throughput"):
        assert not run[key]["errors"], run[key]
    if ceiling.binary() is not None:
        assert run["lean_ceiling"]["charges"] == run["lean_ceiling"]["calls"] == 512
    assert run["flush_rate"]["entries"] == FLUSH_SIZES["entries"]
    for key in ("flush_lag_p99", "drain_after_outage_s"):
        assert not run[key]["errors"], run[key]
        assert run[key]["achieved_rate"] > 0, run[key]
    assert run["flush_lag_p50"]["value"] <= run["flush_lag_p99"]["value"]
    assert run["flush_lag_p99"]["samples"] > 0 and run["flush_lag_p99"]["missing"] == 0
    assert run["drain_after_outage_s"]["backlog"] > 0

    result = report.build([run], {"started_utc": "2000-01-01T00:00:00Z"})
    text = report.markdown(result)
    for key, label in report.ROWS:
        assert label in text or key in http.ROW_KEYS or key in WHOLE_RUN_ROWS
    for name, num, den in report.RATIOS:
        if {num, den} & {*http.ROW_KEYS, *WHOLE_RUN_ROWS}:
            continue
        if name.startswith("async") and "ceiling" in name and ceiling.binary() is None:
            continue
        if name == "flush_rate / copy_rate" and not flush_url.startswith("postgresql"):
            continue
        assert result["ratios"][name]["median"] > 0, name
    statuses = {t["target"]: t["status"] for t in result["targets"]}
    assert statuses["flush lag p99 <= 1,000 ms under 20,000 charges/s offered"] in ("met", "missed")
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


@pytest.mark.timeout(600)  # two servers start; each imports for seconds on a busy machine
def test_http_rows_fill_theirs(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    shown: list[str] = []
    run: report.Run = http.measure(
        redis_url,
        1,
        prefix=key_prefix,
        install_wrk=False,
        python_fallback=True,
        on_row=lambda key, fig, took: shown.append(key),
        **HTTP_SIZES,
    )
    assert shown == http.ROW_KEYS  # each row reported as measured
    for key in http.ROW_KEYS:
        assert run[key]["value"] > 0, (key, run[key])
        assert run[key].get("verified", True), (key, run[key])
    for key in ("http_healthz", "http_charge"):
        assert not run[key]["errors"], run[key]
        assert run[key]["server_cpu_us_per_request"] > 0
    assert run["http_charge"]["charges"] >= run["http_charge"]["requests"] > 0
    assert run["http_charge_p50"]["value"] <= run["http_charge_p99"]["value"]
    if http.find_wrk() is None:
        assert "Python load generator" in run["http_charge"]["note"]
    result = report.build([run], {"started_utc": "2000-01-01T00:00:00Z"})
    assert result["ratios"]["http_charge / http_healthz"]["median"] > 0
    statuses = {t["target"]: t["status"] for t in result["targets"]}
    assert statuses["HTTP POST /v1/charges p99 <= 10 ms at that rate"] in ("met", "missed")
    assert statuses["HTTP POST /v1/charges >= 0.5x GET /healthz (now)"] in ("met", "missed")
    text = report.markdown(result)
    for key, label in report.ROWS:
        assert (label in text) == (key in http.ROW_KEYS), key


def test_http_rows_say_skipped_without_wrk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http.shutil, "which", lambda name, **kw: None)
    figs = http.measure("redis://127.0.0.1:1/0", 1, install_wrk=False)
    assert figs == {key: {"skipped": "skipped: wrk not installed"} for key in http.ROW_KEYS}


def test_profile_summary_by_package() -> None:
    raw = "\n".join(
        [
            f"run (uvicorn/server.py:1);charge ({http.REPO}/api/routers/money.py:9) 30",
            "run (uvicorn/server.py:1);execute (/v/site-packages/redis/asyncio/client.py:5) 60",
            "run (uvicorn/server.py:1);loads (/usr/lib/python3.11/json/decoder.py:2) 10",
            "_bootstrap (threading.py:1);Condition.wait (/usr/lib/threading.py:3) 500",
        ]
    )
    line = http.summarize_profile(raw)
    assert line.startswith("self time by package: redis-py 60%, creditmeter api/ 30%, json 10%")
    assert "inclusive: FastAPI dependencies 0%" in line and "(100 samples)" in line


def test_where_the_time_goes_only_when_the_goal_is_missed() -> None:
    healthz = {"value": 1000.0, "server_cpu_us_per_request": 500.0}
    charge = {
        "value": 500.0,
        "server_cpu_us_per_request": 1900.0,
        "server_cpu": 0.95,
        "redis_cpu": 0.1,
        "client_cpu": 0.2,
    }
    fast = {"value": 5.0}
    run = {"http_healthz": healthz, "http_charge": charge, "http_charge_p99": fast}
    line = http.where_the_time_goes(run)
    assert line is not None and "0.50x" in line and "1,900 us/charge" in line
    run["http_charge"] = {**charge, "value": 900.0}
    assert http.where_the_time_goes(run) is None


@pytest.mark.timeout(QUICK_BENCH_TIMEOUT_S + 60)
def test_quick_bench_prints_every_row(database_url: str, tmp_path: Path) -> None:
    """`python -m bench --quick` as `make bench` runs it (its own Redis; the test SQL): every
    row filled or skipped with its reason, every line of issue 15's table printed."""
    env = {**os.environ, sql_baseline.URL_ENV: _sql_url(database_url)}
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_BENCH_TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (json_path,) = tmp_path.glob("bench-*.json")
    result = json.loads(json_path.read_text())
    (run,) = result["runs"]
    for key, label in report.ROWS:
        fig = run[key]
        if "skipped" in fig:
            assert fig["skipped"].startswith("skipped:"), (key, fig)
            continue
        assert fig["value"] is not None and fig["value"] >= 0, (key, fig)
        assert fig.get("verified", True), (key, fig)
        assert label in out.stdout, key
    for key in ("lean_ceiling", "async_64x512", "cluster_1_node", "flush_lag_achieved"):
        if key != "lean_ceiling" or ceiling.binary() is not None:
            assert run[key]["value"] > 0, (key, run[key])
    targets = {t["target"]: t for t in result["targets"]}
    assert "Issue 15's table" in out.stdout
    for what, name, _, _ in report.ISSUE_TARGETS:
        assert what in out.stdout, what
        if targets[what]["value"] is not None:
            assert targets[what]["status"] in ("met", "missed", "row"), targets[what]
        else:
            assert targets[what]["status"].startswith("skipped:"), (name, targets[what])


def test_cluster_rows_say_why_a_cluster_did_not_start(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 1-node rows are measured; with no redis-server binary for the cluster's nodes, the
    3-node rows say skipped and why, and the run goes on."""
    monkeypatch.setattr(
        cluster_server, "find_server_binary", lambda: Path("/nonexistent/redis-server")
    )
    figs = cluster.rows(
        redis_url, SECONDS, concurrency=32, accounts=8, prefix=key_prefix, say=lambda text: None
    )
    assert set(figs) == set(cluster.ROW_KEYS)
    assert figs["cluster_1_node"]["value"] > 0 and figs["cluster_1_node"]["verified"]
    assert not figs["cluster_1_node"]["errors"]
    assert figs["cluster_1_node_cpu"]["value"] >= 0
    for key in ("cluster_3_nodes", "cluster_3_nodes_cpu"):
        assert figs[key]["skipped"].startswith("skipped: no Redis Cluster (FileNotFoundError"), figs
