"""Prometheus /metrics: charges by tool and outcome, request latency, journal lag.

Several API workers: prometheus_client's multiprocess mode. `creditmeter api` calls
`prepare_multiprocess_dir` before uvicorn starts; it points PROMETHEUS_MULTIPROC_DIR at an
emptied directory, every worker (spawned by uvicorn, so it inherits the variable and imports
prometheus_client afresh) writes its counters to its own mmap files there, and a scrape of
any worker merges them all. The mode is the one prometheus_client chose when it was first
imported in this process (`values.ValueClass`), never re-read from the environment: a single
in-process worker (`--workers 1`, tests, `uvicorn --factory api.app:create_app`) imported it
before the variable was set and serves its own in-memory metrics.

The journal gauges are read from Redis at scrape time and added by a collector on the
per-scrape registry only, so they appear once, not once per worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from meter.keys import Keys
from sync.settings import Settings
from sync.status import journal_status

log = logging.getLogger("creditmeter.api")

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
OUTCOMES = frozenset(
    (
        "charged",
        "insufficient",
        "unknown_tool",
        "tool_disabled",
        "rate_limited",  # refused by the tool's rate limit (429), before any credit moved
        "account_suspended",  # refused because the account is suspended (403)
        "replayed",
        "error",
    )
)
# The service answers in ~1-50 ms; finer steps there, a few coarse ones for the outliers.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
TOOL_LABELS_MAX = 500  # per process: unknown tool names come from clients; beyond -> OTHER
OTHER = "_other"
UNMATCHED = "unmatched"  # route label of requests no route matched (404s, slash redirects)
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
JOURNAL_READ_TIMEOUT_S = 1.0  # a scrape answers without the journal gauges rather than hang

MULTIPROCESS: bool = bool(getattr(values.ValueClass, "_multiprocess", False))
if MULTIPROCESS:  # the files are created lazily by .labels(); the directory must exist
    Path(os.environ[ENV_DIR]).mkdir(parents=True, exist_ok=True)

# Not on prometheus_client's global REGISTRY: each scrape builds its own registry.
CHARGES = Counter(
    "creditmeter_charges",
    "Charge requests by tool and outcome.",
    ["tool", "outcome"],
    registry=None,
)
REQUEST_DURATION = Histogram(
    "creditmeter_request_duration_seconds",
    "Time from request to response headers, by method, route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS_S,
    registry=None,
)

# Label children cached by label values: .labels() validates and locks on every call.
_charge_children: dict[tuple[str, str], Any] = {}
_duration_children: dict[tuple[str, str, int], Any] = {}
_tools_seen: set[str] = set()


def prepare_multiprocess_dir(settings: Settings) -> Path:
    """Sets PROMETHEUS_MULTIPROC_DIR for the workers about to start; returns it, emptied.

    Unset: data_dir/metrics/<this launcher's pid>, and the directories of launchers no longer
    running are removed. Set by the operator: that directory, created if missing. Either way
    its prometheus_client files (*.db) are deleted, so a restart never reports the counts of
    a previous run (counters restart from zero, which Prometheus reads as a counter reset).
    Call it before any worker starts, and before a second launcher could share the directory.
    """
    given = os.environ.get(ENV_DIR)
    if given:
        path = Path(given).resolve()
    else:
        root = Path(settings.data_dir).resolve() / "metrics"
        _remove_dead_launchers(root)
        path = root / str(os.getpid())
    path.mkdir(parents=True, exist_ok=True)
    for db in path.glob("*.db"):
        db.unlink()
    os.environ[ENV_DIR] = str(path)
    return path


def _remove_dead_launchers(root: Path) -> None:
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.is_dir() and child.name.isdigit() and not _alive(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def record_charge(tool: str, outcome: str) -> None:
    """Counts one charge request (outcome one of OUTCOMES). A few µs, no I/O."""
    child = _charge_children.get((tool, outcome))
    if child is None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown charge outcome {outcome!r}")
        label = tool
        if tool not in _tools_seen:
            if len(_tools_seen) >= TOOL_LABELS_MAX:
                label = OTHER
            else:
                _tools_seen.add(tool)
        child = CHARGES.labels(label, outcome)
        if label != OTHER:
            _charge_children[(tool, outcome)] = child
    child.inc()


# --- request latency: a pure ASGI middleware ---------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _observe(scope: Scope, status: int, seconds: float) -> None:
    route = scope.get("route")
    template = getattr(route, "path", None) or UNMATCHED
    method = scope["method"]
    if method not in METHODS:  # bounded labels and cache, whatever the client sends
        method = "other"
    key = (method, template, status)
    child = _duration_children.get(key)
    if child is None:
        child = REQUEST_DURATION.labels(method, template, str(status))
        _duration_children[key] = child
    child.observe(seconds)


class MetricsMiddleware:
    """Times each HTTP request, labelled by route template (bounded cardinality) and status.

    The time is taken when the response headers go out: for a JSON answer that is the whole
    handling (the body is rendered before the headers), for an SSE stream the time to open it,
    not its lifetime. A request that raises before answering counts as 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = time.perf_counter
        start = clock()
        status = 500
        answered = 0.0

        async def timed_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = clock()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            _observe(scope, status, (answered or clock()) - start)


# --- the journal gauges, read from Redis at scrape time ----------------------------------


@dataclass(frozen=True)
class BucketLag:
    bucket: int
    unflushed: int  # journal entries not yet confirmed in SQL (pending + undelivered)
    lag_s: float  # age of the oldest of them; 0 when there is none


def journal_lag(client: redis.Redis, keys: Keys) -> list[BucketLag]:
    """Per bucket, what the flush has not confirmed yet: sync.status's figures (one owner, so
    /metrics and /v1/status/sync always agree). Blocking: run it in a thread."""
    return [
        BucketLag(b.bucket, b.unflushed, (b.oldest_unflushed_age_ms or 0) / 1000)
        for b in journal_status(client, keys)
    ]


class JournalCollector(Collector):
    """The journal figures read for this scrape, as gauges (registered per scrape only)."""

    def __init__(self, lags: list[BucketLag] | None) -> None:
        self.lags = lags

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "creditmeter_journal_up",
            "1 when this scrape read the journal figures from Redis, 0 when it could not.",
            value=0.0 if self.lags is None else 1.0,
        )
        yield up
        if self.lags is None:
            return
        lag = GaugeMetricFamily(
            "creditmeter_journal_lag_seconds",
            "Age of the oldest journal entry not yet confirmed in SQL (0 when none).",
            labels=["bucket"],
        )
        pending = GaugeMetricFamily(
            "creditmeter_journal_pending_entries",
            "Journal entries not yet confirmed in SQL (delivered to a flusher or not).",
            labels=["bucket"],
        )
        for b in self.lags:
            lag.add_metric([str(b.bucket)], b.lag_s)
            pending.add_metric([str(b.bucket)], float(b.unflushed))
        yield lag
        yield pending


class _LocalMetrics(Collector):
    """This process's own metrics (single-process mode)."""

    def collect(self) -> Iterator[Any]:
        yield from CHARGES.collect()
        yield from REQUEST_DURATION.collect()


def render(lags: list[BucketLag] | None) -> bytes:
    """The exposition text: every worker's counters (or this process's) + the journal gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(_LocalMetrics())
    registry.register(JournalCollector(lags))
    return generate_latest(registry)


async def _read_lags(request: Request) -> list[BucketLag] | None:
    from api.state import get_state

    try:
        state = get_state(request)
        # asyncio's thread: a timed-out scrape answers at once while the read finishes alone.
        return await asyncio.wait_for(
            asyncio.to_thread(journal_lag, state.sync_redis(), state.keys),
            timeout=JOURNAL_READ_TIMEOUT_S,
        )
    except (redis.RedisError, OSError, TimeoutError, AttributeError) as exc:
        log.warning("metrics: journal figures unavailable: %s", type(exc).__name__)
        return None


async def metrics_endpoint(request: Request) -> Response:
    lags = await _read_lags(request)
    body = await run_in_threadpool(render, lags)  # merging the workers' files reads disk
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """Adds GET /metrics (no auth) and the latency middleware. Call before the app starts."""
    app.add_middleware(MetricsMiddleware)
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
