"""A throwaway Redis Cluster: CLUSTER_MASTERS masters on free ports, created with
redis-cli --cluster create. Used by the cluster tests (tests/cluster/) and the cluster bench
(bench/cluster.py), which must not import the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from meter.embedded import find_server_binary, free_port

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
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

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
        while node.cluster("INFO")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, f"cluster not ok on port {port}"
            time.sleep(0.05)
