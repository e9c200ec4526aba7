"""/v1/webhook-endpoints against a real API process and a real `creditmeter worker`: the
secret is shown once and verifies what a loopback receiver gets; only admin keys may
manage endpoints; bad input is 422 problem+json; the dashboard's Resend sends again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

import httpx
import pytest
from sqlalchemy import Engine

from api.schemas import WebhookEventType
from sync.db import write_transaction
from sync.webhooks import EVENT_TYPES, emit
from tests.api.conftest import account, bearer, wait_until
from tests.api.test_admin_dashboard import csrf_of, login
from tests.sync.webhook_receiver import Receiver, delete_all_endpoints

DELIVERED_WITHIN_S = 30.0  # the cron sweep runs every 5 s; the worker may still be starting


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=0).start()
    yield r
    r.stop()


def _create(http: httpx.Client, key: str, url: str, events: list[str]) -> httpx.Response:
    return http.post(
        "/v1/webhook-endpoints", json={"url": url, "events": events}, headers=bearer(key)
    )


def test_the_event_names_of_the_api_are_the_outboxs() -> None:
    assert get_args(WebhookEventType) == EVENT_TYPES


def test_only_admin_keys_manage_endpoints(
    http: httpx.Client, meter_key: str, read_key: str
) -> None:
    for key in (meter_key, read_key):
        r = _create(http, key, "https://example.com/hooks", ["balance.low"])
        assert r.status_code == 403
        assert http.get("/v1/webhook-endpoints", headers=bearer(key)).status_code == 403
    assert http.get("/v1/webhook-endpoints").status_code == 401
    r = http.post("/v1/webhook-endpoints", json={"url": "https://example.com", "events": []})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/hooks", "events": ["balance.low"]}, "body.url"),
        ({"url": "http:///hooks", "events": ["balance.low"]}, "url"),
        ({"url": "http://]\u00fa", "events": ["balance.depleted"]}, "url"),  # schemathesis found it
        ({"url": "https://example.com/hooks", "events": []}, "body.events"),
        ({"url": "https://example.com/hooks", "events": ["balance.nope"]}, "body.events.0"),
        ({"url": "https://example.com/hooks"}, "body.events"),
    ],
)
def test_bad_input_is_422_problem_json(
    http: httpx.Client, admin_key: str, body: dict[str, object], field: str
) -> None:
    r = http.post("/v1/webhook-endpoints", json=body, headers=bearer(admin_key))
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]]


def test_the_secret_is_shown_once_and_delete_removes_the_endpoint(
    http: httpx.Client, admin_key: str
) -> None:
    r = _create(http, admin_key, "https://example.com/hooks", ["balance.low", "hold.expired"])
    assert r.status_code == 201
    created = r.json()
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["balance.low", "hold.expired"]

    answer = http.get("/v1/webhook-endpoints", headers=bearer(admin_key))
    (mine,) = [e for e in answer.json()["data"] if e["id"] == created["id"]]
    assert "secret" not in mine and created["secret"] not in answer.text

    path = f"/v1/webhook-endpoints/{created['id']}"
    assert http.delete(path, headers=bearer(admin_key)).status_code == 204
    again = http.delete(path, headers=bearer(admin_key))
    assert again.status_code == 404
    assert again.json()["type"].endswith("webhook-endpoint-not-found")
    listed = http.get("/v1/webhook-endpoints", headers=bearer(admin_key)).json()["data"]
    assert created["id"] not in [e["id"] for e in listed]
    missing = http.get("/v1/webhook-endpoints/ep_none/deliveries", headers=bearer(admin_key))
    assert missing.status_code == 404


def test_the_routes_are_in_the_openapi_document(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/v1/webhook-endpoints"])
    assert "delete" in paths["/v1/webhook-endpoints/{endpoint_id}"]
    assert "get" in paths["/v1/webhook-endpoints/{endpoint_id}/deliveries"]
    assert "422" in paths["/v1/webhook-endpoints"]["post"]["responses"]


def test_the_worker_delivers_a_signed_event_and_the_dashboard_resends_it(
    http: httpx.Client,
    admin_key: str,
    api_engine: Engine,
    api_worker: None,
    receiver: Receiver,
    api_url: str,
) -> None:
    delete_all_endpoints(api_engine)
    created = _create(http, admin_key, receiver.url, ["purchase.completed"]).json()
    receiver.secret = created["secret"]
    acct = account()
    write_transaction(
        api_engine,
        lambda conn: emit(
            conn, "purchase.completed", acct, {"credits": 50}, f"{acct}:purchase.completed"
        ),
    )

    wait_until(lambda: len(receiver.received) == 1, DELIVERED_WITHIN_S)
    first = receiver.received[0]
    assert first.verified
    assert first.json()["data"] == {"account_id": acct, "credits": 50}
    deliveries_path = f"/v1/webhook-endpoints/{created['id']}/deliveries"
    wait_until(
        lambda: (
            http.get(deliveries_path, headers=bearer(admin_key)).json()["data"][0]["status"]
            == "succeeded"
        ),
        5,
    )
    (d,) = http.get(deliveries_path, headers=bearer(admin_key)).json()["data"]
    assert (d["attempts"], d["last_response_code"], d["account_id"]) == (1, 200, acct)

    with httpx.Client(base_url=api_url, timeout=10) as browser:
        assert login(browser, admin_key).status_code == 303
        page = browser.get("/admin/webhooks")
        assert page.status_code == 200 and d["id"] in page.text
        forged = browser.post(
            f"/admin/webhooks/deliveries/{d['id']}/resend", data={"csrf_token": "forged"}
        )
        assert forged.status_code == 403
        r = browser.post(
            f"/admin/webhooks/deliveries/{d['id']}/resend", data={"csrf_token": csrf_of(page.text)}
        )
        assert r.status_code == 303

    wait_until(lambda: len(receiver.received) == 2, DELIVERED_WITHIN_S)
    again = receiver.received[1]
    assert again.verified and again.headers["webhook-id"] == first.headers["webhook-id"]
    wait_until(
        lambda: (
            http.get(deliveries_path, headers=bearer(admin_key)).json()["data"][0]["attempts"] == 2
        ),
        5,
    )
    assert http.delete(f"/v1/webhook-endpoints/{created['id']}", headers=bearer(admin_key))
