"""The bench's own redis-server: measurements never disturb, or get disturbed by, a shared one."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

try:  # a colleague's module; fall back to spawning redis-server ourselves
    from meter.embedded import EmbeddedRedis
except ImportError:  # pragma: no cover - depends on the tree
    EmbeddedRedis = None  # type: ignore[assignment,misc]


class PrivateRedis:
    """A throwaway server without AOF (noted in the report): the bench measures CPU, not disk."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="creditmeter-bench-"))
        self._embedded: EmbeddedRedis | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.pid = 0
        self.binary = ""

    def start(self) -> str:
        if EmbeddedRedis is not None:
            self._embedded = EmbeddedRedis(self._dir, appendonly=False)
            self.url = self._embedded.start()
            self.pid = self._embedded.pid or 0
            self.binary = str(self._embedded.binary)
        else:
            self._start_fallback()
        return self.url

    def _start_fallback(self) -> None:
        import socket
        import time

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server on PATH and no meter.embedded")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url, self.pid, self.binary = f"redis://127.0.0.1:{port}/0", self._proc.pid, binary
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("bench redis-server did not start")

    def version(self) -> str:
        info = redis.Redis.from_url(self.url).info("server")
        return f"{info.get('redis_version')} ({Path(self.binary).name}, appendonly=no)"

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc), 0.0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_pid(url: str) -> int:
    """PID of the server at url when it runs on this machine (INFO server process_id)."""
    try:
        pid = int(redis.Redis.from_url(url).info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return 0
    return pid if Path(f"/proc/{pid}").exists() else 0
