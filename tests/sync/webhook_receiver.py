"""A real HTTP receiver of outgoing webhooks on loopback, for the tests: it verifies every
request's Standard Webhooks signature with the endpoint's secret and answers the statuses it
is told to, in order (then 200)."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import Engine, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from meter.times import now_ms
from sync.models import T_WEBHOOK_EVENTS
from sync.webhooks import delete_endpoint, list_endpoints
from sync.webhooks_deliveries import list_deliveries
from sync.webhooks_send import deliver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int
    secret: str = ""  # set from the 201 answer (or create_endpoint) before anything is sent
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                receiver.received.append(Received(headers, body, verified))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status if verified else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def free_port() -> int:
    """A loopback port nothing listens on (a receiver that is down, until started there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def delete_all_endpoints(engine: Engine) -> None:
    """The test SQL is shared by the session: endpoints other tests left (the schemathesis
    run registers random ones) would get this test's events and slow its sends down."""
    for endpoint in list_endpoints(engine):
        delete_endpoint(engine, "test", endpoint.id)


def account_events(engine: Engine, account_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, payload) of the account's webhook events, oldest first."""
    e = T_WEBHOOK_EVENTS
    with engine.connect() as conn:
        rows = conn.execute(
            select(e.c.type, e.c.payload)
            .where(e.c.account_id == account_id)
            .order_by(e.c.created_at_ms, e.c.id)
        ).all()
    return [(r.type, json.loads(r.payload)) for r in rows]


def send_all(engine: Engine, account_id: str) -> None:
    """One attempt of every pending delivery of the account's events, now."""
    for d in list_deliveries(engine, status="pending"):
        if d.account_id == account_id:
            deliver(engine, d.id, now_ms())
