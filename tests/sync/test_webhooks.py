"""Outgoing webhooks on real SQL and a real loopback receiver that checks every signature:
the outbox deduplicates, retries follow the schedule on a fake clock, a down receiver's
delivery fails after the last attempt and is delivered when resent."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from meter.times import now_ms
from sync.db import write_transaction
from sync.models import T_GRANTS, T_WEBHOOK_EVENTS
from sync.webhooks import (
    WebhookError,
    create_endpoint,
    delete_endpoint,
    emit,
    list_endpoints,
)
from sync.webhooks_deliveries import Delivery, list_deliveries
from sync.webhooks_grants import DAY_MS, dedupe_key, emit_expiring_grants
from sync.webhooks_send import DUE_PER_ENDPOINT_MAX, RETRY_DELAYS_S, deliver, due, make_due
from tests.sync.conftest import account
from tests.sync.webhook_receiver import Receiver, delete_all_endpoints, free_port

MakeEndpoint = Callable[..., tuple[str, Receiver]]
SHORT_TIMEOUT_S = 0.5  # a dead receiver's POST, shortened: the production one is 10 s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=0).start()
    yield r
    r.stop()


@pytest.fixture
def make_endpoint(engine: Engine) -> Iterator[MakeEndpoint]:
    """Registers an endpoint for a receiver; deleted after the test, since the SQL (and so
    every emit's fan-out) is shared by the session's tests."""
    delete_all_endpoints(engine)
    made: list[str] = []

    def make(r: Receiver, events: tuple[str, ...] = ("balance.low",)) -> tuple[str, Receiver]:
        endpoint, secret = create_endpoint(engine, "test", r.url, events)
        r.secret = secret
        made.append(endpoint.id)
        return endpoint.id, r

    yield make
    for endpoint_id in made:
        delete_endpoint(engine, "test", endpoint_id)


def _emit(engine: Engine, type: str, account_id: str, dedupe: str, **payload: Any) -> str | None:
    return write_transaction(engine, lambda conn: emit(conn, type, account_id, payload, dedupe))


def _only(engine: Engine, endpoint_id: str) -> Delivery:
    (d,) = list_deliveries(engine, endpoint_id=endpoint_id)
    return d


def test_a_delivery_is_signed_and_the_receiver_verifies_it(
    engine: Engine, receiver: Receiver, make_endpoint: MakeEndpoint
) -> None:
    endpoint_id, _ = make_endpoint(receiver)
    acct = account()
    event_id = _emit(engine, "balance.low", acct, f"{acct}:low", credit_type="credits", available=3)
    d = _only(engine, endpoint_id)

    done = deliver(engine, d.id, now_ms())

    assert done is not None and (done.status, done.attempts, done.last_response_code) == (
        "succeeded",
        1,
        200,
    )
    (got,) = receiver.received
    assert got.verified
    assert got.headers["webhook-id"] == event_id
    assert got.headers["webhook-signature"].startswith("v1,")
    body = got.json()
    assert body["type"] == "balance.low"
    assert body["data"] == {"account_id": acct, "credit_type": "credits", "available": 3}


def test_a_wrong_secret_fails_verification(
    engine: Engine, receiver: Receiver, make_endpoint: MakeEndpoint
) -> None:
    """The receiver can tell: with another secret the signature does not match."""
    endpoint_id, _ = make_endpoint(receiver)
    receiver.secret = "whsec_" + "A" * 43 + "="
    acct = account()
    _emit(engine, "balance.low", acct, f"{acct}:low")

    done = deliver(engine, _only(engine, endpoint_id).id, now_ms())

    assert done is not None and done.status == "pending" and done.last_response_code == 401
    assert not receiver.received[0].verified


def test_a_500_is_retried_after_the_first_delay_and_then_succeeds(
    engine: Engine, receiver: Receiver, make_endpoint: MakeEndpoint
) -> None:
    endpoint_id, _ = make_endpoint(receiver)
    receiver.statuses = [500]
    acct = account()
    _emit(engine, "balance.low", acct, f"{acct}:low")
    d = _only(engine, endpoint_id)
    t0 = now_ms()

    first = deliver(engine, d.id, t0)
    assert first is not None
    assert (first.status, first.attempts, first.last_response_code) == ("pending", 1, 500)
    assert first.next_attempt_at_ms == t0 + RETRY_DELAYS_S[0] * 1000
    retry_at = t0 + RETRY_DELAYS_S[0] * 1000
    assert deliver(engine, d.id, retry_at - 1) is None  # not due yet: nothing sent
    assert (d.id, 1) in due(engine, retry_at)

    second = deliver(engine, d.id, retry_at)

    assert second is not None
    assert (second.status, second.attempts, second.last_response_code) == ("succeeded", 2, 200)
    assert [r.headers["webhook-id"] for r in receiver.received] == [d.event_id] * 2
    assert all(r.verified for r in receiver.received)


def test_a_down_receiver_fails_after_the_last_attempt_and_a_resend_delivers_it(
    engine: Engine, make_endpoint: MakeEndpoint
) -> None:
    down = Receiver(port=free_port())
    endpoint_id, _ = make_endpoint(down)
    acct = account()
    _emit(engine, "balance.low", acct, f"{acct}:low")
    d = _only(engine, endpoint_id)
    delays_s = (1, 2)  # the schedule is a parameter: no test waits for hours
    at = now_ms()
    for attempt in range(1, 4):
        done = deliver(engine, d.id, at, delays_s=delays_s)
        assert done is not None and done.attempts == attempt
        assert done.last_response_code is None and "ConnectError" in (done.last_error or "")
        at = done.next_attempt_at_ms or at
    assert done.status == "failed" and done.next_attempt_at_ms is None
    assert d.id not in dict(due(engine, at + 10**9))

    down.start()
    try:
        make_due(engine, d.id, now_ms())
        resent = deliver(engine, d.id, now_ms(), delays_s=delays_s)
    finally:
        down.stop()

    assert resent is not None
    assert (resent.status, resent.attempts, resent.last_response_code) == ("succeeded", 4, 200)
    assert len(down.received) == 1 and down.received[0].verified


def test_the_same_dedupe_key_twice_makes_one_event_and_one_delivery(
    engine: Engine, receiver: Receiver, make_endpoint: MakeEndpoint
) -> None:
    endpoint_id, _ = make_endpoint(receiver)
    acct = account()
    first = _emit(engine, "balance.low", acct, f"{acct}:entry-1:low", available=3)
    again = _emit(engine, "balance.low", acct, f"{acct}:entry-1:low", available=3)

    assert first is not None and again is None
    (d,) = list_deliveries(engine, endpoint_id=endpoint_id)
    deliver(engine, d.id, now_ms())
    deliver(engine, d.id, now_ms())
    assert len(receiver.received) == 1


def test_an_event_rolls_back_with_the_producers_transaction(engine: Engine) -> None:
    acct = account()

    class Abort(Exception):
        pass

    def produce_then_fail(conn: Any) -> None:
        emit(conn, "balance.depleted", acct, {}, f"{acct}:depleted")
        raise Abort

    with pytest.raises(Abort):
        write_transaction(engine, produce_then_fail)
    with engine.connect() as conn:
        n = conn.scalar(
            select(func.count()).where(T_WEBHOOK_EVENTS.c.dedupe_key == f"{acct}:depleted")
        )
    assert n == 0


def test_deliveries_go_only_to_endpoints_subscribed_to_the_type(
    engine: Engine, receiver: Receiver, make_endpoint: MakeEndpoint
) -> None:
    low_id, _ = make_endpoint(receiver, ("balance.low",))
    other = Receiver(port=0).start()
    try:
        refunds_id, _ = make_endpoint(other, ("refund.applied", "purchase.completed"))
        acct = account()
        _emit(engine, "refund.applied", acct, f"{acct}:refund")
    finally:
        other.stop()

    assert list_deliveries(engine, endpoint_id=low_id) == []
    assert [d.event_type for d in list_deliveries(engine, endpoint_id=refunds_id)] == [
        "refund.applied"
    ]


def test_a_deleted_endpoint_fails_its_pending_deliveries_and_leaves_the_list(
    engine: Engine, receiver: Receiver
) -> None:
    endpoint, _ = create_endpoint(engine, "test", receiver.url, ["balance.low"])
    acct = account()
    _emit(engine, "balance.low", acct, f"{acct}:low")

    assert delete_endpoint(engine, "test", endpoint.id)
    assert not delete_endpoint(engine, "test", endpoint.id)

    assert endpoint.id not in [e.id for e in list_endpoints(engine)]
    d = _only(engine, endpoint.id)
    assert (d.status, d.last_error) == ("failed", "endpoint deleted")
    assert deliver(engine, d.id, now_ms()) is None and receiver.received == []


@pytest.mark.parametrize(
    ("url", "events", "field"),
    [
        ("ftp://example.com/x", ["balance.low"], "url"),
        ("http:///nohost", ["balance.low"], "url"),
        ("http://]\u00fa", ["balance.low"], "url"),  # urlsplit raises: an unclosed IPv6 bracket
        ("http://example.com:99999/x", ["balance.low"], "url"),
        ("http://\u0001x/", ["balance.low"], "url"),  # httpx refuses a control character
        ("https://example.com/x", [], "events"),
        ("https://example.com/x", ["balance.nope"], "events"),
    ],
)
def test_a_bad_endpoint_is_refused(engine: Engine, url: str, events: list[str], field: str) -> None:
    with pytest.raises(WebhookError) as exc:
        create_endpoint(engine, "test", url, events)
    assert exc.value.field == field


def _grant(engine: Engine, acct: str, expires_at_ms: int | None, remaining: int) -> str:
    grant_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            T_GRANTS.insert(),
            {
                "id": grant_id,
                "account_id": acct,
                "credit_type": "credits",
                "amount": 100,
                "remaining": remaining,
                "category": "promotional",
                "priority": 10,
                "expires_at_ms": expires_at_ms,
                "source": "grant",
                "created_at_ms": now_ms(),
            },
        )
    return grant_id


def test_grant_expiring_is_emitted_once_per_grant_within_the_notice(
    engine: Engine, receiver: Receiver, make_endpoint: MakeEndpoint
) -> None:
    endpoint_id, _ = make_endpoint(receiver, ("grant.expiring",))
    acct = account()
    now = now_ms()
    soon = _grant(engine, acct, now + DAY_MS, 40)
    later = _grant(engine, acct, now + 30 * DAY_MS, 40)
    spent = _grant(engine, acct, now + DAY_MS, 0)
    _grant(engine, acct, None, 40)

    emit_expiring_grants(engine, now)
    emit_expiring_grants(engine, now + 1000)  # a later scan, or a second worker's

    with engine.connect() as conn:
        keys = set(
            conn.scalars(
                select(T_WEBHOOK_EVENTS.c.dedupe_key).where(T_WEBHOOK_EVENTS.c.account_id == acct)
            )
        )
    assert keys == {dedupe_key(soon)}
    assert dedupe_key(later) not in keys and dedupe_key(spent) not in keys
    # Grants of other tests in the shared SQL may expire within the notice too.
    (d,) = [d for d in list_deliveries(engine, endpoint_id=endpoint_id) if d.account_id == acct]
    deliver(engine, d.id, now_ms())
    (got,) = receiver.received
    assert got.verified
    assert got.json()["data"]["grant_id"] == soon
    assert got.json()["data"]["remaining"] == 40


def _ours(engine: Engine, at_ms: int, *endpoint_ids: str) -> list[str]:
    """The due deliveries of these endpoints, in the sweep's order (the SQL is shared)."""
    mine = {d.id for e in endpoint_ids for d in list_deliveries(engine, endpoint_id=e)}
    return [did for did, _ in due(engine, at_ms) if did in mine]


def test_a_dead_endpoint_costs_one_timeout_and_never_holds_up_another(
    engine: Engine, make_endpoint: MakeEndpoint, receiver: Receiver
) -> None:
    with socket.socket() as hole:  # accepts connections, never answers: every POST times out
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        dead_id, _ = make_endpoint(Receiver(port=hole.getsockname()[1]))
        good_id, _ = make_endpoint(receiver)
        acct = account()
        for i in range(5):
            _emit(engine, "balance.low", acct, f"{acct}:low:{i}")
        at = now_ms()
        started = time.monotonic()
        with httpx.Client(timeout=SHORT_TIMEOUT_S) as http:
            for did in _ours(engine, at, dead_id, good_id):  # as the sweep's jobs run them
                deliver(engine, did, at, http=http)
        took_s = time.monotonic() - started
    good = list_deliveries(engine, endpoint_id=good_id)
    assert [d.status for d in good] == ["succeeded"] * 5 and len(receiver.received) == 5
    dead = list_deliveries(engine, endpoint_id=dead_id)
    tried = [d for d in dead if d.attempts]
    assert len(tried) == 1 and "Timeout" in (tried[0].last_error or "")
    retry_at = tried[0].next_attempt_at_ms
    assert retry_at == at + RETRY_DELAYS_S[0] * 1000
    # The others wait for that retry, with no attempt counted against them.
    assert {(d.status, d.attempts, d.next_attempt_at_ms) for d in dead if not d.attempts} == {
        ("pending", 0, retry_at)
    }
    assert took_s < 5 * SHORT_TIMEOUT_S


def test_a_sweep_takes_endpoints_in_turns_and_caps_each(
    engine: Engine, make_endpoint: MakeEndpoint, receiver: Receiver
) -> None:
    busy_id, _ = make_endpoint(receiver)  # balance.low
    other = Receiver(port=0).start()
    try:
        quiet_id, _ = make_endpoint(other, ("balance.depleted",))
        acct = account()
        for i in range(DUE_PER_ENDPOINT_MAX + 5):
            _emit(engine, "balance.low", acct, f"{acct}:low:{i}")
        _emit(engine, "balance.depleted", acct, f"{acct}:depleted")  # the newest event
        order = _ours(engine, now_ms() + 1, busy_id, quiet_id)
    finally:
        other.stop()
    (quiet,) = list_deliveries(engine, endpoint_id=quiet_id)
    assert quiet.id in order[:2]  # not behind the busy endpoint's backlog
    assert len(order) == DUE_PER_ENDPOINT_MAX + 1
