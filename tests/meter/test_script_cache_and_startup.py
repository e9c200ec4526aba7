"""The scripts load from the package meter.lua; SCRIPT FLUSH never fails a charge (SPEC §11.2),
and the meter refuses an evicting Redis (SPEC §5). The Redis tests run on private servers:
flushing or reconfiguring the shared one is not ours."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from meter import AsyncMeter, Keys, Meter, NewAccountLoader, scripts
from meter.embedded import EmbeddedRedis, RedisConfigError
from meter.settings import MeterSettings
from sync.settings import Settings

REPO_LUA = Path(__file__).resolve().parents[2] / "lua"


def test_scripts_load_every_lua_file_through_the_meter_lua_package() -> None:
    """The loader reads the package meter.lua (lua/ mapped by pyproject), as a wheel has it:
    every script of the folder, each include expanded."""
    registry = scripts.registry()
    assert set(registry) == {path.stem for path in REPO_LUA.glob("*.lua")}
    for script in registry.values():
        assert "--- @include" not in script.source, script.name


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    with EmbeddedRedis(tmp_path, appendonly=False) as server:
        yield server.url


def test_sync_charges_survive_a_script_cache_flush(private_redis: str) -> None:
    meter = Meter.from_url(private_redis, keys=Keys(prefix="sf"), loader=NewAccountLoader())
    meter.set_tool("IMAGE_GEN", 1)
    meter.grant("acct", "credits", 10)
    for expected_balance in (9, 8, 7):
        meter.redis.script_flush()
        assert meter.charge("acct", "IMAGE_GEN").balance == expected_balance


async def test_batched_async_charges_survive_a_script_cache_flush(private_redis: str) -> None:
    meter = AsyncMeter.from_url(private_redis, keys=Keys(prefix="sf"), loader=NewAccountLoader())
    await meter.set_tool("IMAGE_GEN", 1)
    await meter.grant("acct", "credits", 100)
    await meter.redis.script_flush()
    results = await asyncio.gather(*(meter.charge("acct", "IMAGE_GEN") for _ in range(50)))
    assert sorted(r.balance for r in results) == list(range(50, 100))
    await meter.aclose()


def test_from_settings_refuses_a_redis_that_may_evict_balances(tmp_path: Path) -> None:
    with EmbeddedRedis(
        tmp_path, appendonly=False, extra_args=["--maxmemory-policy", "allkeys-lru"]
    ) as server:
        settings = Settings(redis_url=server.url, data_dir=tmp_path)
        with pytest.raises(RedisConfigError, match="noeviction"):
            Meter.from_settings(settings)
        with pytest.raises(RedisConfigError, match="noeviction"):
            AsyncMeter.from_settings(settings)


def test_meter_settings_hold_only_what_a_meter_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The meter library reads its Redis, prefix and buckets; the service's SQL, Stripe and
    secret settings live in sync.settings and never reach it."""
    monkeypatch.setenv("CREDITMETER_KEY_PREFIX", "lib")
    monkeypatch.setenv("CREDITMETER_DATABASE_URL", "postgresql+psycopg://u@h/db")
    fields = set(MeterSettings.model_fields)
    assert fields == {"redis_url", "buckets", "key_prefix", "data_dir"}
    assert MeterSettings().key_prefix == "lib"
