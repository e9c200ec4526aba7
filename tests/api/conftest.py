"""HTTP tests run against a real `creditmeter api` process on real Redis and real SQL.

One server per test module (start-up costs seconds); each module has its own key prefix,
data directory and secret, so modules never see each other's wallets or keys.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq import Queue, Worker
from sqlalchemy import Engine

from meter.keys import Keys
from sync.db import engine_for
from sync.queues import SYNC, queue_name
from tests import stripe_fake as sf
from tests.api.server import creditmeter_bin, running_api, server_env

HTTP_TIMEOUT_S = 10.0
WORKER_READY_S = 60.0  # the worker's children import rq, SQLAlchemy and redis-py
WORKER_STOP_S = 30.0  # the supervisor stops its children gracefully first
STRIPE_WEBHOOK_SECRET = "whsec_test_" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def api_prefix() -> str:
    return "a" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def api_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def api_env(redis_url: str, sql_url: str, api_prefix: str, api_data_dir: Path) -> dict[str, str]:
    return server_env(redis_url, sql_url, api_prefix, api_data_dir)


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[sf.FakeStripe]:
    with sf.FakeStripe() as f:
        yield f


@pytest.fixture(scope="module")
def stripe_api_env(
    redis_url: str,
    sql_url: str,
    api_prefix: str,
    api_data_dir: Path,
    fake_stripe: sf.FakeStripe,
) -> dict[str, str]:
    """The server's environment with Stripe configured and reached on the loopback fake; a
    module that sells credits overrides api_env with it."""
    return server_env(
        redis_url,
        sql_url,
        api_prefix,
        api_data_dir,
        CREDITMETER_STRIPE_SECRET_KEY="sk_test_fake",
        CREDITMETER_STRIPE_WEBHOOK_SECRET=STRIPE_WEBHOOK_SECRET,
        CREDITMETER_STRIPE_API_BASE=fake_stripe.url,
    )


@pytest.fixture(scope="module")
def api_url(api_env: dict[str, str], api_data_dir: Path) -> Iterator[str]:
    with running_api(api_env, log_path=api_data_dir / "api.log") as url:
        yield url


@pytest.fixture(scope="module")
def api_worker(api_env: dict[str, str]) -> Iterator[None]:
    """`creditmeter worker` as a deployment runs it beside the API, yielded once its rq
    worker listens on the sync queue."""
    proc = subprocess.Popen(
        [creditmeter_bin(), "worker"],
        env=api_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sync_queue = Queue(
        queue_name(Keys(prefix=api_env["CREDITMETER_KEY_PREFIX"]), SYNC),
        connection=redis.Redis.from_url(api_env["CREDITMETER_REDIS_URL"]),
    )
    try:
        wait_until(lambda: Worker.all(queue=sync_queue), WORKER_READY_S)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=WORKER_STOP_S)


def wait_until(done: Callable[[], Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"not done within {timeout_s} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def api_engine(sql_url: str) -> Engine:
    return engine_for(sql_url)


@pytest.fixture(scope="module")
def make_key(api_engine: Engine, api_env: dict[str, str]) -> Callable[[str], str]:
    """Creates an API key of a scope the way `creditmeter keys create` does; returns it."""
    from sync.apikeys import create_key

    secret = api_env["CREDITMETER_SECRET_KEY"].encode()

    def make(scope: str) -> str:
        name = f"test-{scope}-{uuid.uuid4().hex[:6]}"
        return create_key(api_engine, secret, name=name, scope=scope).plaintext

    return make


@pytest.fixture(scope="module")
def admin_key(make_key: Callable[[str], str]) -> str:
    return make_key("admin")


@pytest.fixture(scope="module")
def meter_key(make_key: Callable[[str], str]) -> str:
    return make_key("meter")


@pytest.fixture(scope="module")
def read_key(make_key: Callable[[str], str]) -> str:
    return make_key("read")


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=HTTP_TIMEOUT_S) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wallet(balance: dict[str, Any], credit_type: str = "credits") -> dict[str, Any]:
    """One wallet of a GET /v1/accounts/{id}/balance answer. The answer lists every credit
    type the catalog knows, and the test SQL is shared: other modules' types may sort first."""
    (row,) = [b for b in balance["balances"] if b["credit_type"] == credit_type]
    return row


def account(prefix: str = "acct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def idem() -> dict[str, str]:
    """A fresh Idempotency-Key header."""
    return {"Idempotency-Key": uuid.uuid4().hex}


def grant(http: httpx.Client, key: str, acct: str, amount: int) -> httpx.Response:
    return http.post(
        f"/v1/accounts/{acct}/grants",
        json={"credit_type": "credits", "amount": amount, "category": "paid"},
        headers={**bearer(key), **idem()},
    )


def charge(http: httpx.Client, key: str, acct: str, tool: str, **extra: Any) -> httpx.Response:
    """POST /v1/charges with a fresh Idempotency-Key (or extra["headers"]) and extra fields."""
    headers = {**bearer(key), **extra.pop("headers", idem())}
    return http.post(
        "/v1/charges", json={"account_id": acct, "tool": tool, **extra}, headers=headers
    )


@pytest.fixture(scope="module")
def tool(api_url: str, admin_key: str, api_prefix: str) -> str:
    """A tool of cost 10 in credits, without a rate limit."""
    name = f"IMG_{api_prefix.upper()}"
    r = httpx.put(
        f"{api_url}/v1/tools/{name}",
        json={"display_name": "Image", "cost": 10, "credit_type": "credits", "active": True},
        headers=bearer(admin_key),
    )
    assert r.status_code == 200, r.text
    return name


@pytest.fixture
def funded(http: httpx.Client, admin_key: str) -> Callable[[int], str]:
    """make(amount) -> a new account granted `amount` paid credits."""

    def make(amount: int) -> str:
        acct = account()
        r = grant(http, admin_key, acct, amount)
        assert r.status_code == 201, r.text
        return acct

    return make
