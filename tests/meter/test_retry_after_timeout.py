"""SPEC §11.3: a retry after a timeout never applies a charge twice.

A loopback proxy forwards everything to the real Redis but holds back the reply to the first
EVALSHA for longer than the client's socket timeout. The script ran; the client times out and
redis-py re-sends the same command on a new connection; the idempotency record answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from meter import AsyncMeter, Keys, Meter, NewAccountLoader, scripts
from meter.signatures import CHARGE
from tests.meter.helpers import journal_entries

CLIENT_TIMEOUT_S = 0.3
REPLY_DELAY_S = 1.0  # longer than the client timeout: the first reply arrives too late
CONCURRENT_CHARGES = 40  # several buckets, so the late round carries several script calls


class DelayFirstEvalProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.delayed = threading.Event()
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            hold_reply = threading.Event()  # set when this connection's next reply is late
            threading.Thread(
                target=self._requests, args=(client, server, hold_reply), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(server, client, hold_reply), daemon=True
            ).start()

    def _requests(
        self, src: socket.socket, dst: socket.socket, hold_reply: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if b"EVALSHA" in data and not self.delayed.is_set():
                    self.delayed.set()
                    hold_reply.set()
                dst.sendall(data)
        _close(src, dst)

    def _replies(self, src: socket.socket, dst: socket.socket, hold_reply: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if hold_reply.is_set():
                    hold_reply.clear()
                    self.stopping.wait(REPLY_DELAY_S)
                dst.sendall(data)
        _close(src, dst)

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


def _cache_charge_script(meter: Meter) -> None:
    """The delayed reply must be the charge's, not a NOSCRIPT on a server that has not run a
    charge yet (the test alone on a fresh server)."""
    meter.redis.script_load(scripts.get(CHARGE.script).source)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[DelayFirstEvalProxy]:
    url = urlparse(redis_url)
    p = DelayFirstEvalProxy((url.hostname or "127.0.0.1", url.port or 6379))
    yield p
    p.close()


def test_redis_py_retry_after_timeout_applies_the_charge_once(
    redis_url: str, proxy: DelayFirstEvalProxy, key_prefix: str
) -> None:
    keys = Keys(prefix=key_prefix)
    direct = Meter.from_url(redis_url, keys=keys, loader=NewAccountLoader())
    direct.set_tool("IMAGE_GEN", 10)
    _cache_charge_script(direct)
    account = f"acct_{uuid.uuid4().hex[:6]}"
    direct.grant(account, "credits", 100)

    flaky = redis.Redis(
        host="127.0.0.1",
        port=proxy.port,
        socket_timeout=CLIENT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 2),  # redis-py retries TimeoutError by default
    )
    meter = Meter(flaky, keys=keys, loader=NewAccountLoader())
    result = meter.charge(account, "IMAGE_GEN", idempotency_key="req-1")

    assert proxy.delayed.is_set(), "the proxy never delayed a reply: the test proved nothing"
    assert result.replayed, "the first send ran and the retry was answered from the record"
    wallet = direct.balance(account, ["credits"]).wallet("credits")
    assert wallet is not None and wallet.balance == 90
    journal = journal_entries(direct.redis, keys.journal(keys.bucket(account)))
    charges = [e for _, e in journal if e[b"k"] == b"charge" and e[b"a"] == account.encode()]
    assert len(charges) == 1


async def test_async_round_resent_after_a_timeout_applies_each_charge_once(
    redis_url: str, proxy: DelayFirstEvalProxy, key_prefix: str
) -> None:
    """The async client writes a whole round itself (meter/aclient._send_round): a reply
    late past the timeout resends the round on a new connection, answered as replays."""
    keys = Keys(prefix=key_prefix)
    direct = Meter.from_url(redis_url, keys=keys, loader=NewAccountLoader())
    direct.set_tool("IMAGE_GEN", 10)
    _cache_charge_script(direct)
    accounts = [f"acct_{uuid.uuid4().hex[:6]}_{i}" for i in range(CONCURRENT_CHARGES)]
    for account in accounts:
        direct.grant(account, "credits", 100)

    flaky = redis.asyncio.Redis(
        host="127.0.0.1",
        port=proxy.port,
        socket_timeout=CLIENT_TIMEOUT_S,
        retry=AsyncRetry(NoBackoff(), 2),
    )
    meter = AsyncMeter(flaky, keys=keys, loader=NewAccountLoader())
    results = await asyncio.gather(*(meter.charge(a, "IMAGE_GEN") for a in accounts))
    await meter.aclose()

    assert proxy.delayed.is_set(), "the proxy never delayed a reply: the test proved nothing"
    assert any(r.replayed for r in results), "the late round was not resent"
    assert [r.balance for r in results] == [90] * len(accounts)
    for account in accounts:
        wallet = direct.balance(account, ["credits"]).wallet("credits")
        assert wallet is not None and wallet.balance == 90, account
        journal = journal_entries(direct.redis, keys.journal(keys.bucket(account)))
        mine = [e for _, e in journal if e[b"k"] == b"charge" and e[b"a"] == account.encode()]
        assert len(mine) == 1, account
