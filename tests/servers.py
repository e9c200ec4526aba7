"""Private servers for tests that kill, stop or restart them: never the machine's shared
Redis or PostgreSQL. Redis comes from meter.embedded (EmbeddedRedis: free port, own dir);
PostgreSQL is a throwaway cluster made with initdb and run with pg_ctl on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from meter.embedded import EmbeddedRedis, find_server_binary, free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
PG_START_TIMEOUT_S = 30


def pg_bin(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


def postgres_available() -> bool:
    return pg_bin("initdb") is not None and pg_bin("pg_ctl") is not None


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


class PrivatePostgres:
    """A PostgreSQL cluster of its own: trust auth, 127.0.0.1, a free port, fsync off."""

    def __init__(self) -> None:
        # Directly under /tmp: the postgres user must reach it, and pytest's tmp dirs are
        # private to root.
        self.base_dir = Path(tempfile.mkdtemp(prefix="creditmeter-pg-"))
        self.data_dir = self.base_dir / "pgdata"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(_as_postgres(cmd), check=True, capture_output=True, timeout=120)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, "postgres", "postgres")
        initdb = pg_bin("initdb")
        assert initdb
        self._run(
            [
                initdb,
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        return self

    def start(self) -> str:
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c unix_socket_directories={self.base_dir}"
        )
        self._run(
            [
                pg_ctl,
                "-D",
                str(self.data_dir),
                "-o",
                opts,
                "-l",
                str(self.base_dir / "pg.log"),
                "-w",
                "-t",
                str(PG_START_TIMEOUT_S),
                "start",
            ]
        )
        return self.url

    def stop(self, mode: str = "fast") -> None:
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )

    def __enter__(self) -> PrivatePostgres:
        self.init().start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)


def private_redis(data_dir: Path, appendonly: bool = True) -> EmbeddedRedis:
    """A redis-server of the test's own (AOF everysec when appendonly), not yet started."""
    return EmbeddedRedis(data_dir, appendonly=appendonly)


def sigkill_redis(server: EmbeddedRedis) -> None:
    """Kills the server the hard way (no shutdown, no final fsync) and waits for it."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)


CLUSTER_MASTERS = 3  # the smallest cluster redis-cli agrees to create with no replicas
CLUSTER_OK_TIMEOUT_S = 30.0  # gossip settles in about a second on loopback
# A node also listens on port + 10000 (the cluster bus), so its port must leave room for it.
CLUSTER_PORT_MAX = 65535 - 10000


class PrivateCluster:
    """A Redis Cluster of its own: CLUSTER_MASTERS masters on free ports in base_dir, no
    replicas, no persistence; `url` is the redis+cluster:// URL of its first node."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.ports = [_cluster_port() for _ in range(CLUSTER_MASTERS)]
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> str:
        server = find_server_binary()
        for port in self.ports:
            node_dir = self.base_dir / str(port)
            node_dir.mkdir(parents=True)
            cmd = [str(server), "--port", str(port), "--bind", "127.0.0.1"]
            cmd += ["--dir", str(node_dir), "--cluster-enabled", "yes"]
            cmd += ["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"]
            cmd += ["--logfile", str(node_dir / "redis.log")]
            self._processes.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        for port in self.ports:
            _wait_for_ping(port)
        create = [_cli_binary(server), "--cluster", "create"]
        create += [f"127.0.0.1:{p}" for p in self.ports]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        for port in self.ports:
            _wait_for_cluster_ok(port)
        return self.url

    def stop(self) -> None:
        for process in self._processes:
            process.kill()
        for process in self._processes:
            process.wait(timeout=10)
        self._processes.clear()

    def __enter__(self) -> PrivateCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is also free."""
    while True:
        port = free_port()
        if port <= CLUSTER_PORT_MAX and _is_free(port + 10000):
            return port


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cli_binary(server: Path) -> str:
    """The redis-cli (or valkey-cli) next to the server, else the one on PATH."""
    for name in ("redis-cli", "valkey-cli"):
        beside = server.parent / name
        if beside.exists():
            return str(beside)
    found = shutil.which("redis-cli") or shutil.which("valkey-cli")
    assert found, "redis-cli is needed to create a cluster"
    return found


def _node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _wait_for_ping(port: int) -> None:
    deadline = time.monotonic() + CLUSTER_OK_TIMEOUT_S
    with _node(port) as node:
        while True:
            try:
                node.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _wait_for_cluster_ok(port: int) -> None:
    deadline = time.monotonic() + CLUSTER_OK_TIMEOUT_S
    with _node(port) as node:
        while node.cluster("INFO")["cluster_state"] != "ok":  # type: ignore[no-untyped-call]
            assert time.monotonic() < deadline, f"cluster not ok on port {port}"
            time.sleep(0.05)
