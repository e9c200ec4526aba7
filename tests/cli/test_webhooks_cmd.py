"""`creditmeter webhooks list|deliveries|resend` on real SQL and a loopback receiver: a
delivery that failed while the receiver was down is delivered by `resend` once it is up."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from cli.main import app
from meter.times import now_ms
from sync.db import write_transaction
from sync.webhooks import create_endpoint, delete_endpoint, emit
from sync.webhooks_deliveries import list_deliveries
from sync.webhooks_send import deliver
from tests.sync.conftest import account
from tests.sync.webhook_receiver import Receiver, delete_all_endpoints, free_port


@pytest.fixture
def down_endpoint(engine: Engine) -> Iterator[tuple[str, Receiver]]:
    """An endpoint whose receiver is not listening yet (start() brings it up, same port)."""
    delete_all_endpoints(engine)
    receiver = Receiver(port=free_port())
    endpoint, receiver.secret = create_endpoint(engine, "test", receiver.url, ["hold.expired"])
    yield endpoint.id, receiver
    receiver.stop()
    delete_endpoint(engine, "test", endpoint.id)


def _run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, ["webhooks", *args])


def _failed_delivery(engine: Engine, endpoint_id: str) -> str:
    acct = account()
    write_transaction(
        engine,
        lambda conn: emit(conn, "hold.expired", acct, {"hold_id": "h1"}, f"{acct}:h1:expired"),
    )
    (d,) = list_deliveries(engine, endpoint_id=endpoint_id)
    at = now_ms()
    for _ in range(2):
        done = deliver(engine, d.id, at, delays_s=(1,))
        assert done is not None
        at = done.next_attempt_at_ms or at
    assert done.status == "failed"
    return d.id


def test_resend_delivers_a_failed_delivery_once_the_receiver_is_up(
    cli: CliRunner, engine: Engine, down_endpoint: tuple[str, Receiver]
) -> None:
    endpoint_id, receiver = down_endpoint
    delivery_id = _failed_delivery(engine, endpoint_id)

    still_down = _run(cli, "resend", delivery_id)
    assert still_down.exit_code == 1, still_down.output
    assert "no answer" in still_down.output and "ConnectError" in still_down.output

    receiver.start()
    result = _run(cli, "resend", delivery_id)

    assert result.exit_code == 0, result.output
    assert f"{delivery_id} to {receiver.url}: HTTP 200, attempt 4, succeeded" in result.output
    (got,) = receiver.received
    assert got.verified
    listed = json.loads(_run(cli, "deliveries", "--endpoint", endpoint_id, "--json").output)
    (d,) = listed["data"]
    assert (d["id"], d["status"], d["attempts"], d["last_response_code"]) == (
        delivery_id,
        "succeeded",
        4,
        200,
    )


def test_list_shows_endpoints_without_secrets_and_deliveries_filter_by_status(
    cli: CliRunner, engine: Engine, down_endpoint: tuple[str, Receiver]
) -> None:
    endpoint_id, receiver = down_endpoint
    delivery_id = _failed_delivery(engine, endpoint_id)

    listed = _run(cli, "list", "--json")
    assert listed.exit_code == 0, listed.output
    (mine,) = [e for e in json.loads(listed.output)["data"] if e["id"] == endpoint_id]
    assert mine["url"] == receiver.url and "secret" not in mine
    assert receiver.secret not in listed.output
    assert endpoint_id in _run(cli, "list").output

    failed = _run(cli, "deliveries", "--status", "failed", "--endpoint", endpoint_id)
    assert failed.exit_code == 0 and delivery_id in failed.output
    succeeded = _run(cli, "deliveries", "--status", "succeeded", "--endpoint", endpoint_id)
    assert delivery_id not in succeeded.output
    assert _run(cli, "deliveries", "--status", "nope").exit_code == 2


def test_resend_of_an_unknown_delivery_is_a_usage_error(cli: CliRunner) -> None:
    result = _run(cli, "resend", "dlv_none")
    assert result.exit_code == 2
    assert "no webhook delivery" in result.output
