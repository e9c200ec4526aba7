"""The FastAPI dependency, through examples/ai_app.py served by uvicorn over real HTTP:
charged before the endpoint, 402 problem+json without running it, refunded when it raises."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine

from meter import Meter, Tool
from meter.embedded import free_port
from meter.keys import Keys
from sync.catalog import save_tools
from sync.loader import SqlLoader
from tests.api.conftest import account
from tests.api.server import START_TIMEOUT_S, server_env

REPO = Path(__file__).resolve().parents[2]
IMAGE_GEN = Tool("IMAGE_GEN", 10, "credits", display_name="Image generation")


@pytest.fixture(scope="module")
def example_url(redis_url: str, sql_url: str, api_prefix: str, api_data_dir: Path) -> Iterator[str]:
    env = server_env(redis_url, sql_url, api_prefix, api_data_dir)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.ai_app:app", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(api_data_dir / "example.log", "wb"),  # noqa: SIM115
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, "example app exited"
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(base + "/openapi.json", timeout=1.0)
                break
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def meter(redis_url: str, sql_url: str, api_prefix: str, api_engine: Engine) -> Meter:
    keys = Keys(prefix=api_prefix, buckets=4)
    save_tools(api_engine, [IMAGE_GEN])
    m = Meter(redis.Redis.from_url(redis_url), keys=keys, loader=SqlLoader(api_engine, keys))
    m.set_tools([IMAGE_GEN])
    return m


def funded(meter: Meter, amount: int) -> str:
    acct = account("app")
    meter.grant(acct, "credits", amount, category="paid")
    return acct


def balance(meter: Meter, acct: str) -> int:
    wallet = meter.balance(acct, ["credits"]).wallet("credits")
    assert wallet is not None
    return wallet.balance


def post(url: str, path: str, acct: str, prompt: str, **headers: str) -> httpx.Response:
    return httpx.post(
        url + path, json={"prompt": prompt}, headers={"X-Account-Id": acct, **headers}, timeout=10
    )


def test_paid_request_is_charged_before_the_endpoint(example_url: str, meter: Meter):
    acct = funded(meter, 25)
    r = post(example_url, "/generate", acct, "a red fox")
    assert r.status_code == 200, r.text
    assert r.json()["charged"] == 10 and r.json()["balance"] == 15
    assert balance(meter, acct) == 15


def test_unpaid_request_gets_402_problem_and_the_endpoint_never_runs(
    example_url: str, meter: Meter
):
    acct = funded(meter, 5)
    r = post(example_url, "/generate", acct, "a red fox")
    assert r.status_code == 402
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 402 and body["required"] == 10 and body["balance"] == 5
    assert body["credit_type"] == "credits"
    assert balance(meter, acct) == 5


def test_failing_endpoint_is_refunded(example_url: str, meter: Meter):
    acct = funded(meter, 30)
    r = post(example_url, "/generate", acct, "please fail")
    assert r.status_code == 500
    assert balance(meter, acct) == 30
    r = post(example_url, "/variation", acct, "fail again")
    assert r.status_code == 500
    assert balance(meter, acct) == 30


def test_dependency_only_form_charges_the_quantity(example_url: str, meter: Meter):
    acct = funded(meter, 30)
    assert post(example_url, "/variation", acct, "a fox").status_code == 200
    assert balance(meter, acct) == 10


def test_client_retry_with_idempotency_key_pays_once(example_url: str, meter: Meter):
    acct = funded(meter, 30)
    key = uuid.uuid4().hex
    for _ in range(3):
        assert (
            post(example_url, "/generate", acct, "fox", **{"Idempotency-Key": key}).status_code
            == 200
        )
    assert balance(meter, acct) == 20


def test_no_account_header_is_401_problem(example_url: str):
    r = httpx.post(example_url + "/generate", json={"prompt": "x"}, timeout=10)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
