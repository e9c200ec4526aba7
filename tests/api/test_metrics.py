"""Prometheus /metrics (api/metrics.py).

Over real HTTP: `creditmeter api --workers 3` on real Redis and SQL; counts summed over the
workers must be exact whichever worker answers the scrape. In process: the multiprocess
directory, the journal gauges against real Redis, single-process mode, Redis down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api import metrics
from meter.keys import Keys
from meter.times import now_ms
from sync.flush import GROUP
from sync.settings import Settings
from tests.api.conftest import HTTP_TIMEOUT_S, account, bearer
from tests.api.server import running_api

WORKERS = 3
BUCKETS = 4  # tests.api.server.server_env: CREDITMETER_BUCKETS=4
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def idem() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


# --- several workers, over HTTP ----------------------------------------------------------


@pytest.fixture(scope="module")
def multi_url(api_env: dict[str, str], api_data_dir: Path) -> Iterator[str]:
    with running_api(api_env, workers=WORKERS, log_path=api_data_dir / "api-multi.log") as url:
        yield url


def fresh(url: str, method: str, path: str, **kw: object) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to any worker."""
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as c:
        return c.request(method, path, **kw)  # type: ignore[arg-type]


def metrics_dir(api_data_dir: Path) -> Path:
    dirs = [d for d in (api_data_dir / "metrics").iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs  # one launcher, one directory
    return dirs[0]


def test_route_counts_are_exact_across_workers(multi_url: str, api_data_dir: Path) -> None:
    n = 60
    for _ in range(n):
        assert fresh(multi_url, "GET", "/healthz").status_code == 200
    for _ in range(3):
        assert fresh(multi_url, "GET", "/no/such/route/" + uuid.uuid4().hex).status_code == 404
    # Several scrapes, likely answered by different workers: each sees every worker's counts.
    for _ in range(5):
        r = fresh(multi_url, "GET", "/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        s = scrape(r.text)
        count = "creditmeter_request_duration_seconds_count"
        assert total(s, count, route="/healthz", method="GET", status="200") == n
        assert total(s, count, route="unmatched", status="404") == 3  # not one label per path
    files = {p.name for p in metrics_dir(api_data_dir).glob("histogram_*.db")}
    assert len(files) >= 2, files  # the requests really were spread over several workers


def _setup_tool_and_accounts(
    url: str, admin_key: str, prefix: str, n: int
) -> tuple[str, list[str]]:
    tool = f"MX_{prefix.upper()}"
    r = fresh(
        url,
        "PUT",
        f"/v1/tools/{tool}",
        json={"display_name": "Metrics", "cost": 3, "credit_type": "credits", "active": True},
        headers=bearer(admin_key),
    )
    assert r.status_code == 200, r.text
    accounts = [account("mx") for _ in range(n)]
    for acct in accounts:
        r = fresh(
            url,
            "POST",
            f"/v1/accounts/{acct}/grants",
            json={"credit_type": "credits", "amount": 1_000, "category": "paid"},
            headers={**bearer(admin_key), **idem()},
        )
        assert r.status_code == 201, r.text
    return tool, accounts


def test_charges_by_tool_and_outcome_sum_exactly_over_workers(
    multi_url: str, admin_key: str, meter_key: str, api_prefix: str
) -> None:
    tool, accounts = _setup_tool_and_accounts(multi_url, admin_key, api_prefix, 8)
    before = scrape(fresh(multi_url, "GET", "/metrics").text)
    n = 45
    replay_headers = {**bearer(meter_key), **idem()}
    statuses: list[int] = []
    for i in range(n):
        body = {"account_id": accounts[i % len(accounts)], "tool": tool, "quantity": 1}
        r = fresh(
            multi_url, "POST", "/v1/charges", json=body, headers={**bearer(meter_key), **idem()}
        )
        statuses.append(r.status_code)
    assert statuses == [201] * n
    replayed_body = {"account_id": accounts[0], "tool": tool}
    for _ in range(3):  # the first charges, the next two replay
        r = fresh(multi_url, "POST", "/v1/charges", json=replayed_body, headers=replay_headers)
        assert r.status_code == 201, r.text
    poor = account("poor")  # first touch, no grant: balance 0
    r = fresh(
        multi_url,
        "POST",
        "/v1/charges",
        json={"account_id": poor, "tool": tool},
        headers={**bearer(meter_key), **idem()},
    )
    assert r.status_code == 402, r.text
    missing = tool + "_NOPE"
    r = fresh(
        multi_url,
        "POST",
        "/v1/charges",
        json={"account_id": accounts[0], "tool": missing},
        headers={**bearer(meter_key), **idem()},
    )
    assert r.status_code == 404, r.text

    after = scrape(fresh(multi_url, "GET", "/metrics").text)
    name = "creditmeter_charges_total"

    def delta(**labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta(tool=tool, outcome="charged") == n + 1
    assert delta(tool=tool, outcome="replayed") == 2
    assert delta(tool=tool, outcome="insufficient") == 1
    assert delta(tool=missing, outcome="unknown_tool") == 1
    count = "creditmeter_request_duration_seconds_count"
    route = {"route": "/v1/charges", "method": "POST"}
    assert total(after, count, status="201", **route) - total(
        before, count, status="201", **route
    ) == (n + 3)
    # The journal gauges: one series per bucket, reported once (not once per worker).
    assert after[("creditmeter_journal_up", frozenset())] == 1.0
    for gauge in ("creditmeter_journal_lag_seconds", "creditmeter_journal_pending_entries"):
        series = {lab for (n_, lab) in after if n_ == gauge}
        assert series == {frozenset({("bucket", str(b))}) for b in range(BUCKETS)}, gauge
    # No worker runs in this test: every grant and charge is still unflushed.
    pending = total(after, "creditmeter_journal_pending_entries")
    assert pending >= len(accounts) + n + 1
    assert max(v for (n_, _), v in after.items() if n_ == "creditmeter_journal_lag_seconds") > 0


def test_another_launcher_starts_from_zero_in_its_own_directory(
    api_env: dict[str, str], api_data_dir: Path, multi_url: str
) -> None:
    """A restart (a new launcher, same data directory) never reports the old counts."""
    first = metrics_dir(api_data_dir)
    assert any(first.glob("*.db"))
    with running_api(api_env, workers=2, log_path=api_data_dir / "api-second.log") as url:
        s = scrape(fresh(url, "GET", "/metrics").text)
        dirs = {d for d in (api_data_dir / "metrics").iterdir() if d.is_dir()}
    assert len(dirs) == 2 and first in dirs  # the first launcher still runs: its dir stays
    count = "creditmeter_request_duration_seconds_count"
    assert total(s, count, route="/healthz") == 0
    assert total(s, "creditmeter_charges_total") == 0


# --- in process --------------------------------------------------------------------------


def test_prepare_multiprocess_dir_unset_uses_data_dir_and_clears_dead_launchers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics.ENV_DIR, raising=False)
    root = tmp_path / "metrics"
    dead = root / "999999999"  # above pid_max: never a running process
    dead.mkdir(parents=True)
    (dead / "counter_1.db").write_bytes(b"x")
    mine = root / str(os.getpid())
    mine.mkdir()
    (mine / "counter_2.db").write_bytes(b"stale")
    path = metrics.prepare_multiprocess_dir(Settings(data_dir=tmp_path))
    assert path == mine.resolve()
    assert os.environ[metrics.ENV_DIR] == str(path)
    assert not any(path.iterdir())
    assert not dead.exists()


def test_prepare_multiprocess_dir_set_is_created_and_emptied_of_db_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "histogram_7.db").write_bytes(b"stale")
    (given / "README").write_text("not ours")
    monkeypatch.setenv(metrics.ENV_DIR, str(given))
    path = metrics.prepare_multiprocess_dir(Settings(data_dir=tmp_path / "unused"))
    assert path == given.resolve()
    assert sorted(p.name for p in path.iterdir()) == ["README"]
    assert not (tmp_path / "unused").exists()


def test_workers_pick_multiprocess_mode_from_the_environment(tmp_path: Path) -> None:
    """A fresh interpreter with the variable set (what uvicorn spawns) writes mmap files."""
    code = (
        "from api import metrics\n"
        "assert metrics.MULTIPROCESS\n"
        "metrics.record_charge('T', 'charged')\n"
        "print(metrics.render(None).decode())\n"
    )
    env = {**os.environ, metrics.ENV_DIR: str(tmp_path / "mp")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert total(scrape(out), "creditmeter_charges_total", tool="T", outcome="charged") == 1
    assert list((tmp_path / "mp").glob("counter_*.db"))


def _tiny_app(state: object) -> FastAPI:
    app = FastAPI()
    app.state.cm = state

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    metrics.install(app)
    return app


def test_single_process_route_templates_and_redis_down() -> None:
    assert not metrics.MULTIPROCESS  # the test process never sets PROMETHEUS_MULTIPROC_DIR
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    state = SimpleNamespace(sync_redis=lambda: dead, keys=Keys(prefix="x", buckets=2))
    app = _tiny_app(state)
    with TestClient(app, raise_server_exceptions=False) as c:
        base = scrape(c.get("/metrics").text)
        for i in range(5):
            assert c.get(f"/things/{i}").status_code == 200
        assert c.get("/boom").status_code == 500
        r = c.get("/metrics")
    assert r.status_code == 200
    s = scrape(r.text)
    count = "creditmeter_request_duration_seconds_count"

    def delta(**labels: str) -> float:
        return total(s, count, **labels) - total(base, count, **labels)

    assert delta(route="/things/{thing_id}", status="200", method="GET") == 5
    assert delta(route="/boom", status="500") == 1
    assert s[("creditmeter_journal_up", frozenset())] == 0.0
    assert not any(n == "creditmeter_journal_lag_seconds" for n, _ in s)


def test_record_charge_rejects_an_unknown_outcome_and_bounds_tool_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError):
        metrics.record_charge("T", "nope")
    monkeypatch.setattr(metrics, "_tools_seen", {f"T{i}" for i in range(metrics.TOOL_LABELS_MAX)})
    before = scrape(metrics.render(None).decode())
    metrics.record_charge("ONE_TOO_MANY", "unknown_tool")
    after = scrape(metrics.render(None).decode())
    name = "creditmeter_charges_total"
    assert total(after, name, tool="ONE_TOO_MANY") == 0
    assert total(after, name, tool=metrics.OTHER) - total(before, name, tool=metrics.OTHER) == 1


# --- the journal gauges against real Redis ----------------------------------------------


async def test_journal_lag_per_bucket(
    redis_async: redis.asyncio.Redis, redis_sync: redis.Redis, key_prefix: str
) -> None:
    keys = Keys(prefix=key_prefix, buckets=3)
    now = now_ms()
    j0, j1 = keys.journal(0), keys.journal(1)
    # bucket 0: no flush group yet, 3 entries, the oldest 5 s old
    for i, age_ms in enumerate((5000, 4000, 3000)):
        await redis_async.xadd(j0, {"n": str(i)}, id=f"{now - age_ms}-0")
    # bucket 1: 4 entries, 2 delivered to a flusher (pending), then 1 of those acknowledged
    for i, age_ms in enumerate((9000, 8000, 7000, 6000)):
        await redis_async.xadd(j1, {"n": str(i)}, id=f"{now - age_ms}-0")
    await redis_async.xgroup_create(j1, GROUP, id="0")
    got = await redis_async.xreadgroup(GROUP, "c1", {j1: ">"}, count=2)
    first_id = got[0][1][0][0]
    await redis_async.xack(j1, GROUP, first_id)
    # bucket 2: nothing
    lags = {b.bucket: b for b in metrics.journal_lag(redis_sync, keys)}
    assert lags[0].unflushed == 3 and 4.5 <= lags[0].lag_s < 10
    assert lags[1].unflushed == 3 and 7.5 <= lags[1].lag_s < 12  # oldest pending: 8 s
    assert lags[2].unflushed == 0 and lags[2].lag_s == 0.0
    # bucket 1 all flushed: delivered and acknowledged, the stream not yet trimmed
    rest = await redis_async.xreadgroup(GROUP, "c1", {j1: ">"}, count=10)
    pending_ids = [e[0] for e in rest[0][1]] + [got[0][1][1][0]]
    await redis_async.xack(j1, GROUP, *pending_ids)
    lags = {b.bucket: b for b in metrics.journal_lag(redis_sync, keys)}
    assert lags[1].unflushed == 0 and lags[1].lag_s == 0.0
    await redis_async.delete(j0, j1)
