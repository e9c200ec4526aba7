"""GET /v1/accounts/{id}/events through the real route: a browser's account token in
`?token=` receives the balance events of a charge and a hold (their latency is measured
in tests/api/test_sse_stream.py)."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.api.conftest import account, bearer

EVENT_WAIT_S = 30.0  # generous: CI machines are loaded; a pass takes milliseconds


class EventReader:
    """Reads an SSE stream in a thread; `next()` returns (arrival time, data) of each event."""

    def __init__(self, url: str, params: dict[str, str]) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.status: queue.Queue[int] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._thread = threading.Thread(target=self._read, args=(url, params), daemon=True)
        self._thread.start()

    def _read(self, url: str, params: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, params=params) as r:
                self.status.put(r.status_code)
                event = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[len("event: ") :]
                    elif line.startswith("data: ") and event == "balance":
                        self.events.put((time.monotonic(), json.loads(line[len("data: ") :])))
        except httpx.HTTPError:
            pass

    def next(self) -> tuple[float, dict[str, Any]]:
        return self.events.get(timeout=EVENT_WAIT_S)

    def snapshot(self, credit_type: str) -> dict[str, Any]:
        """The snapshot of one wallet: the stream sends one per credit type the account or
        the shared catalog knows (other modules' tools may add types that sort first)."""
        while True:
            _, event = self.next()
            if event["entry_id"] is None and event["credit_type"] == credit_type:
                return event

    def next_change(self) -> dict[str, Any]:
        """The next event of a change, skipping snapshots (entry_id null), which the stream
        repeats after redis-py re-subscribes."""
        while True:
            _, event = self.next()
            if event["entry_id"] is not None:
                return event

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="module")
def tool(api_url: str, admin_key: str, api_prefix: str) -> str:
    name = f"SSE_{api_prefix.upper()}"
    r = httpx.put(
        f"{api_url}/v1/tools/{name}",
        json={"display_name": "s", "cost": 7, "credit_type": "credits"},
        headers=bearer(admin_key),
    )
    assert r.status_code == 200
    return name


def test_browser_token_streams_charge_and_hold_events(
    http: httpx.Client, api_url: str, admin_key: str, meter_key: str, tool: str
) -> None:
    acct = account("sse")
    granted = http.post(
        f"/v1/accounts/{acct}/grants",
        json={"credit_type": "credits", "amount": 100, "category": "paid"},
        headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert granted.status_code == 201, granted.text
    token = http.post(f"/v1/accounts/{acct}/tokens", headers=bearer(meter_key)).json()["token"]
    reader = EventReader(f"{api_url}/v1/accounts/{acct}/events", {"token": token})
    try:
        assert reader.status.get(timeout=EVENT_WAIT_S) == 200
        assert reader.snapshot("credits")["balance"] == 100  # the state once subscribed

        c = http.post(
            "/v1/charges",
            json={"account_id": acct, "tool": tool},
            headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
        ).json()
        event = reader.next_change()
        assert event == {
            "credit_type": "credits",
            "available": 93,
            "held": 0,
            "balance": 93,
            "entry_id": c["id"],
        }

        h = http.post(
            "/v1/holds",
            json={"account_id": acct, "tool": tool, "amount": 40},
            headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
        ).json()
        event = reader.next_change()
        assert (event["available"], event["held"], event["balance"]) == (53, 40, 93)
        http.post(
            f"/v1/holds/{h['id']}/settle",
            json={"amount": 15},
            headers={**bearer(meter_key), "Idempotency-Key": uuid.uuid4().hex},
        )
        event = reader.next_change()
        assert (event["available"], event["held"], event["balance"]) == (78, 0, 78)
    finally:
        reader.close()


def test_event_stream_auth(http: httpx.Client, meter_key: str, read_key: str) -> None:
    a, b = account("sse"), account("sse")
    token_a = http.post(f"/v1/accounts/{a}/tokens", headers=bearer(meter_key)).json()["token"]
    assert http.get(f"/v1/accounts/{b}/events", params={"token": token_a}).status_code == 403
    assert http.get(f"/v1/accounts/{a}/events").status_code == 401
    assert http.get(f"/v1/accounts/{a}/events", params={"token": "cmt_forged.x"}).status_code == 401
    with http.stream("GET", f"/v1/accounts/{a}/events", headers=bearer(read_key)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
