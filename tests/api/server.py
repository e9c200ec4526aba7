"""A real API server for HTTP tests: `creditmeter api` in a subprocess on a free port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from meter.embedded import free_port

START_TIMEOUT_S = (
    90.0  # several workers import FastAPI, SQLAlchemy and redis each; slow when loaded
)
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05


def creditmeter_bin() -> str:
    return str(Path(sys.executable).parent / "creditmeter")


def server_env(
    redis_url: str, database_url: str, key_prefix: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        CREDITMETER_REDIS_URL=redis_url,
        CREDITMETER_DATABASE_URL=database_url,
        CREDITMETER_KEY_PREFIX=key_prefix,
        CREDITMETER_BUCKETS="4",
        CREDITMETER_DATA_DIR=str(data_dir),
        CREDITMETER_SECRET_KEY="test-secret-" + key_prefix,
        _TYPER_STANDARD_TRACEBACK="1",  # a failing start prints its traceback at once
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def running_api(
    env: dict[str, str], workers: int = 1, log_path: Path | None = None
) -> Iterator[str]:
    """Starts `creditmeter api`, waits for /readyz, yields its base URL, stops it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [creditmeter_bin(), "api", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"creditmeter api exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"creditmeter api not ready within {START_TIMEOUT_S} s")
