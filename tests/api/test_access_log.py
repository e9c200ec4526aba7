"""Each request to `creditmeter api` writes exactly one structured line to its output."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.access_log import REQUEST_ID_RE
from tests.api.conftest import account, bearer

LOG_WAIT_S = 5.0  # the line is written once the answer is sent, so just after the client has it


def _lines_with(log_path: Path, request_id: str) -> list[dict[str, Any]]:
    """The access lines of one request id, waiting a little for the first to land."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        found = [
            json.loads(ln)
            for ln in log_path.read_text().splitlines()
            if ln.startswith("{") and f'"request_id":"{request_id}"' in ln
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture
def log_path(api_url: str, api_data_dir: Path) -> Path:
    return api_data_dir / "api.log"


def test_a_charge_writes_one_line_with_method_path_status_duration_key_and_request_id(
    http: httpx.Client, log_path: Path, admin_key: str
) -> None:
    acct = account()
    request_id = "req-" + uuid.uuid4().hex
    r = http.post(
        f"/v1/accounts/{acct}/grants",
        json={"credit_type": "credits", "amount": 5, "category": "paid"},
        headers={
            **bearer(admin_key),
            "Idempotency-Key": uuid.uuid4().hex,
            "X-Request-Id": request_id,
        },
    )
    assert r.status_code == 201, r.text
    assert r.headers["x-request-id"] == request_id

    (line,) = _lines_with(log_path, request_id)
    assert line["method"] == "POST"
    assert line["path"] == f"/v1/accounts/{acct}/grants"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], float | int) and 0 <= line["duration_ms"] < 10_000
    assert line["key_id"].startswith("key_")
    assert line["account_id"] == acct
    assert line["ts"].endswith("Z")


def test_a_refused_request_is_logged_with_its_status_and_no_key(
    http: httpx.Client, log_path: Path
) -> None:
    r = http.get("/v1/tools", headers=bearer("cm_live_" + "x" * 40))
    assert r.status_code == 401
    request_id = r.headers["x-request-id"]
    assert REQUEST_ID_RE.fullmatch(request_id)  # made by the server: none was sent

    (line,) = _lines_with(log_path, request_id)
    assert (line["method"], line["path"], line["status"]) == ("GET", "/v1/tools", 401)
    assert line["key_id"] is None and line["account_id"] is None


def test_the_query_string_is_not_logged(http: httpx.Client, log_path: Path, read_key: str) -> None:
    r = http.get("/v1/tools?token=cmt_secret", headers=bearer(read_key))
    (line,) = _lines_with(log_path, r.headers["x-request-id"])
    assert line["path"] == "/v1/tools"
    assert "cmt_secret" not in log_path.read_text()


def test_a_request_id_that_is_not_a_plain_token_is_replaced(
    http: httpx.Client, read_key: str
) -> None:
    r = http.get("/v1/tools", headers={**bearer(read_key), "X-Request-Id": "a b\tc"})
    assert r.headers["x-request-id"] != "a b\tc"
    assert REQUEST_ID_RE.fullmatch(r.headers["x-request-id"])
