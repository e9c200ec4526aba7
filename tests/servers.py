"""Private servers for tests that kill, stop or restart them: never the machine's shared
Redis or PostgreSQL. Redis comes from meter.embedded (EmbeddedRedis: free port, own dir);
PostgreSQL is a throwaway cluster made with initdb and run with pg_ctl on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from meter.embedded import EmbeddedRedis, free_port

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
