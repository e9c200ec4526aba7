"""`creditmeter up` (what `make run` calls): everything on one machine, stopped by Ctrl-C.

The parent starts the embedded Redis once (or uses CREDITMETER_REDIS_URL), migrates SQL,
applies the catalog, makes a fresh admin key, then runs `creditmeter api` and
`creditmeter worker` as children that share that Redis through CREDITMETER_REDIS_URL.

Signals: each child runs in a session of its own and the Redis server starts with SIGINT
blocked, so a Ctrl-C at the terminal reaches only this process, which stops the children
first (they may still need Redis while they finish) and Redis last (SHUTDOWN fsyncs the
AOF). Signal handlers only set a flag that the code checks between steps: a signal never
interrupts a migration, a key write or a process start half-way.

A lock file in the data directory keeps two `up`s off one data directory, and tells other
`creditmeter` commands run meanwhile which Redis the running service uses
(`running_redis_url`), so they never start a second server on the same AOF.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

import httpx
from rich.console import Console
from rich.markup import escape

from meter.embedded import EmbeddedRedis
from sync import limits
from sync.settings import Settings

if TYPE_CHECKING:
    from sync.catalog_file import Catalog

READY_TIMEOUT_S = 60.0  # a cold start imports FastAPI, SQLAlchemy and redis; ~2 s when warm
READY_PROBE_TIMEOUT_S = 1.0
READY_POLL_INTERVAL_S = 0.1
WATCH_INTERVAL_S = 0.2  # how soon a dead child or a signal is noticed
# A running flush job yields within FLUSH_JOB_BUDGET_S and the worker's warm shutdown waits
# for it; past this the children are killed (their journal entries stay pending, reclaimed).
CHILD_STOP_TIMEOUT_S = limits.FLUSH_JOB_BUDGET_S + 10.0
CHILD_KILL_WAIT_S = 5.0
UP_KEY_NAME = "up-admin"
UP_KEY_SCOPE = "admin"
LOCK_FILE_NAME = "up.lock"
LOG_DIR_NAME = "logs"
DEFAULT_CATALOG = Path("examples") / "catalog.toml"
REPO_ROOT = Path(__file__).resolve().parent.parent
ANY_ADDRESS = ("0.0.0.0", "::", "")
LOG_LINE_LEN_MAX = 200  # of a dead child's last log line, quoted in the error
# A child's log is appended to across runs and moved to NAME.log.1 (replacing the one
# before) when a write would take it past this: ~50,000 access lines of ~200 B, days of a
# developer's traffic, while logs/ never holds more than twice this per child.
LOG_BYTES_MAX = 10 * 1024 * 1024
ROTATED_SUFFIX = ".1"
LOG_READ_BYTES_MAX = 64 * 1024  # one read from a child's pipe; a longer line is split
LOG_TAIL_LINES = 50  # of each child's output, kept to say why it died
LOG_DRAIN_S = 2.0  # after a child died, how long its last lines may take to arrive


class UpError(RuntimeError):
    """Why `up` cannot start or keep running, in one line."""


class _Stop(Exception):
    """A stop signal arrived (Ctrl-C or SIGTERM): shut down cleanly, exit 0."""


class ChildLog:
    """A child's log file: appended to across runs (a first line says when each run began),
    and moved to NAME.log.1 before a write would take it past `bytes_max`."""

    def __init__(self, path: Path, started: str, bytes_max: int = LOG_BYTES_MAX) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.bytes_max = bytes_max
        self.file = path.open("ab")
        self.size = self.file.tell()
        self.write(f"--- creditmeter up started at {started} ---\n".encode())

    def write(self, data: bytes) -> None:
        if self.size and self.size + len(data) > self.bytes_max:
            self.file.close()
            try:
                self.path.replace(self.path.with_name(self.path.name + ROTATED_SUFFIX))
            finally:  # moved or not, writing goes on at NAME.log
                self.file = self.path.open("ab")
                self.size = self.file.tell()
        self.file.write(data)
        self.file.flush()
        self.size += len(data)

    def close(self) -> None:
        self.file.close()


class _LogPump:
    """Copies a child's output (stdout and stderr, one pipe) into its log on a thread, and
    keeps its last lines to say why it died."""

    def __init__(self, pipe: IO[bytes], log: ChildLog) -> None:
        self.log = log
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe: IO[bytes]) -> None:
        with pipe:
            while data := pipe.readline(LOG_READ_BYTES_MAX):
                # A full disk loses log lines, never the child: an undrained pipe would
                # block its next write.
                with contextlib.suppress(OSError, ValueError):  # ValueError: not reopened
                    self.log.write(data)
                text = data.decode(errors="replace").strip()
                if text:
                    self.tail.append(text)

    def lines(self) -> list[str]:
        """The last lines, once the pipe is drained (or LOG_DRAIN_S passed: a grandchild
        that outlives the child keeps it open)."""
        self.thread.join(LOG_DRAIN_S)
        return list(self.tail)

    def close(self) -> None:
        self.thread.join(LOG_DRAIN_S)
        self.log.close()


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    pump: _LogPump


# --- the lock file: one `up` per data directory -------------------------------------------


def _lock_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / LOCK_FILE_NAME


def _lock_holder(path: Path) -> dict[str, object] | None:
    """What the running `up` wrote into its lock file, or None when no `up` holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4096).decode(errors="replace")
            try:
                info = json.loads(text)
            except ValueError:
                info = None
            return info if isinstance(info, dict) else {}
        return None  # we got the lock: nobody holds it (a stale file from a killed `up`)
    finally:
        os.close(fd)


def running_redis_url(settings: Settings) -> str | None:
    """The Redis URL of an `up` running on this data directory, when no URL is configured."""
    if settings.redis_url:
        return None
    info = _lock_holder(_lock_path(settings))
    if info is None:
        return None
    url = info.get("redis_url")
    if not isinstance(url, str):
        raise UpError(
            f"creditmeter up is starting with data in {settings.data_dir}; try again in a moment"
        )
    return url


class _Lock:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            holder = _lock_holder(path) or {}
            pid = holder.get("pid", "?")
            raise UpError(
                f"another creditmeter up (pid {pid}) is running with data in {path.parent}"
            ) from None

    def write(self, info: dict[str, object]) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        # The file stays: removing it would race a second `up` taking the lock on a new one.
        os.ftruncate(self.fd, 0)
        os.close(self.fd)


# --- small helpers --------------------------------------------------------------------------


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """A process started in here inherits a blocked SIGINT (the mask survives exec): the
    terminal's Ctrl-C then reaches only this process, which stops that one when it is time."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _public_host(host: str) -> str:
    """Where a browser on this machine reaches a server bound to `host`."""
    if host in ANY_ADDRESS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn does: a port in TIME_WAIT from the last run is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _port_in_use(host, port) from None
            raise UpError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _port_in_use(host: str, port: int) -> UpError:
    return UpError(f"port {port} on {host} is already in use: stop what holds it or pass --port")


def _shown(url: str) -> str:
    """A Redis or SQL URL fit to print: any password masked."""
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _display_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def creditmeter_bin() -> str:
    """The `creditmeter` script of this installation (beside this Python), else on PATH."""
    beside = Path(sys.executable).parent / "creditmeter"
    if beside.is_file():
        return str(beside)
    found = shutil.which("creditmeter")
    if found is None:
        raise UpError("the creditmeter command is not installed (pip install -e .)")
    return found


def resolve_catalog(path: Path | None) -> Path:
    """--catalog as given (relative to the current directory), else examples/catalog.toml
    of the current directory, else of the repository this package runs from."""
    if path is not None:
        return path
    for base in (Path.cwd(), REPO_ROOT):
        if (base / DEFAULT_CATALOG).is_file():
            return base / DEFAULT_CATALOG
    raise UpError(f"no {DEFAULT_CATALOG} here or in {REPO_ROOT}: pass --catalog FILE")


# --- the service ----------------------------------------------------------------------------


class Up:
    def __init__(
        self, settings: Settings, *, host: str, port: int, catalog: Path | None, console: Console
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.catalog_arg = catalog
        self.console = console
        self.err = Console(stderr=True)
        self.base_url = f"http://{_public_host(host)}:{port}"
        self.log_dir = Path(settings.data_dir) / LOG_DIR_NAME
        self.signals: list[str] = []  # names of the stop signals received, oldest first
        self.lock: _Lock | None = None
        self.redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.children: list[_Child] = []

    # signals

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signal.Signals(signum).name)

    def _checkpoint(self) -> None:
        if self.signals:
            raise _Stop(self.signals[0])

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        code = 0
        try:
            self._start()
            self._watch()
        except _Stop:
            pass
        except Exception as exc:  # any failure: one line, then the same clean shutdown
            text = str(getattr(exc, "orig", None) or exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            self.err.print(f"[red]error:[/red] {escape(first)}", soft_wrap=True, highlight=False)
            code = 1
        finally:
            self._shutdown()
        return code

    # start-up

    def _say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def _start(self) -> None:
        from sync.catalog_file import load_catalog

        self.lock = _Lock(_lock_path(self.settings))
        _check_port_free(self.host, self.port)
        catalog = load_catalog(resolve_catalog(self.catalog_arg))
        self._checkpoint()
        self._start_redis()
        self.lock.write({"pid": os.getpid(), "redis_url": self.redis_url, "api": self.base_url})
        self._checkpoint()
        self._prepare_sql(catalog)
        self._checkpoint()
        key = self._admin_key()
        self._checkpoint()
        self._spawn("api", ["api", "--host", self.host, "--port", str(self.port), "--workers", "1"])
        self._spawn("worker", ["worker"])
        self._wait_ready()
        self._banner(key)

    def _start_redis(self) -> None:
        from meter.connect import checked_redis_url

        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            where = "CREDITMETER_REDIS_URL"
        else:
            self.redis = EmbeddedRedis(Path(self.settings.data_dir) / "redis", appendonly=True)
            with _sigint_blocked():
                self.redis_url = self.redis.start()
            where = f"embedded, data in {_display_path(self.redis.data_dir)}"
        self.settings = self.settings.model_copy(update={"redis_url": self.redis_url})
        checked_redis_url(self.settings)  # refuses a Redis that may evict balances
        self._say(f"Redis      {_shown(self.redis_url)} ({where})")

    def _prepare_sql(self, catalog: Catalog) -> None:
        from sync.catalog_file import apply_catalog
        from sync.context import context
        from sync.migrate import current, upgrade

        url = self.settings.database_url
        upgrade(url)
        self._say(f"SQL        {_shown(url)} (revision {current(url)})")
        ctx = context(self.settings)
        changes = apply_catalog(ctx.engine, ctx.meter(), catalog, actor="up")
        source = _display_path(Path(catalog.source))
        self._say(
            f"catalog    {source}: " + (f"{len(changes)} changes" if changes else "up to date")
        )
        for line in changes:
            self._say(f"             {line}")

    def _admin_key(self) -> str:
        """A new admin key each start (keys are stored hashed, so an old one cannot be shown
        again); the keys earlier starts made are revoked, so only the printed one works."""
        from meter.connect import keys_from
        from meter.redis_conn import sync_client
        from sync.apikeys import KeyReplica, create_key, list_keys, revoke_key
        from sync.db import engine_for
        from sync.secret import secret_key

        engine = engine_for(self.settings.database_url)
        client = sync_client(self.redis_url)
        # The API checks keys against their Redis copy: revoke and add there too, at once.
        replica = KeyReplica(client, keys_from(self.settings))
        try:
            for old in list_keys(engine):
                if old.name == UP_KEY_NAME and not old.revoked:
                    revoke_key(engine, old.id, replica=replica)
            created = create_key(
                engine,
                secret_key(self.settings),
                name=UP_KEY_NAME,
                scope=UP_KEY_SCOPE,
                replica=replica,
            )
        finally:
            client.close()
        return created.plaintext

    def _spawn(self, name: str, args: list[str]) -> None:
        from meter.times import now_ms, rfc3339

        log_path = self.log_dir / f"{name}.log"
        env = dict(os.environ, CREDITMETER_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        log = ChildLog(log_path, rfc3339(now_ms()))
        # Through a pipe, not the file itself: the log can then be moved aside mid-run.
        proc = subprocess.Popen(
            [creditmeter_bin(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is ours to pass on, in order
        )
        assert proc.stdout is not None
        self.children.append(_Child(name, proc, log_path, _LogPump(proc.stdout, log)))

    def _check_children(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is None:
                continue
            lines = child.pump.lines()
            log = _display_path(child.log_path)
            if child.name == "api" and any("address already in use" in ln for ln in lines):
                raise _port_in_use(self.host, self.port)  # taken since _check_port_free
            if code < 0:
                raise UpError(
                    f"the {child.name} was killed by {signal.Signals(-code).name} ({log})"
                )
            why = f": {lines[-1][:LOG_LINE_LEN_MAX]}" if lines else ""
            raise UpError(f"the {child.name} exited with code {code}{why} ({log})")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self._checkpoint()
            self._check_children()
            with contextlib.suppress(httpx.HTTPError):
                reply = httpx.get(self.base_url + "/readyz", timeout=READY_PROBE_TIMEOUT_S)
                if reply.status_code == 200:
                    return
            if time.monotonic() > deadline:
                log = _display_path(self.log_dir / "api.log")
                raise UpError(f"the API did not get ready within {READY_TIMEOUT_S:.0f} s ({log})")
            time.sleep(READY_POLL_INTERVAL_S)

    def _banner(self, key: str) -> None:
        base = self.base_url
        logs = ", ".join(_display_path(c.log_path) for c in self.children)
        self._say(f"API        {base}")
        self._say(f"API docs   {base}/docs")
        self._say(f"dashboard  {base}/admin")
        self._say(f"logs       {logs}")
        self._say("")
        self._say(f"Admin API key (shown once; earlier {UP_KEY_NAME} keys are now revoked):")
        print(key, flush=True)  # alone on its line, unstyled and never wrapped
        self._say("")
        run = secrets.token_hex(4)
        auth = f'-H "Authorization: Bearer {key}"'
        json_ct = '-H "Content-Type: application/json"'
        self._say("Try it: grant 50 paid credits to user_1, charge one IMAGE_GEN, read the balance")
        self._say(
            f"  curl -X POST {base}/v1/accounts/user_1/grants {auth} {json_ct} "
            f'-H "Idempotency-Key: grant-{run}" '
            """-d '{"credit_type": "credits", "amount": 50, "category": "paid"}'"""
        )
        self._say(
            f"  curl -X POST {base}/v1/charges {auth} {json_ct} "
            f'-H "Idempotency-Key: charge-{run}" '
            """-d '{"account_id": "user_1", "tool": "IMAGE_GEN"}'"""
        )
        self._say(f"  curl {base}/v1/accounts/user_1/balance {auth}")
        self._say("")
        self._say("creditmeter is up. Ctrl-C stops it.")

    # running

    def _watch(self) -> None:
        while True:
            self._checkpoint()
            self._check_children()
            time.sleep(WATCH_INTERVAL_S)

    # shutdown

    def _shutdown(self) -> None:
        if self.signals:
            self._say(f"{self.signals[0]}: stopping")
        self._stop_children()
        if self.redis is not None:
            self.redis.stop()  # SHUTDOWN: the AOF is fsynced before the server exits
        if self.lock is not None:
            self.lock.release()
        if self.children or self.redis is not None:
            self._say("stopped")

    def _stop_children(self) -> None:
        """SIGTERM to each child; SIGKILL to each child's whole process group when the
        timeout passes or a second stop signal asks to hurry, and for any straggler."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        signals_before = len(self.signals)
        while any(c.proc.poll() is None for c in self.children):
            hurry = len(self.signals) > signals_before  # Ctrl-C again: do not wait
            if hurry or time.monotonic() > deadline:
                break
            time.sleep(WATCH_INTERVAL_S / 2)
        for child in self.children:
            # Each child leads its own session; its group holds its work-horses and trigger.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(CHILD_KILL_WAIT_S)
            child.pump.close()


def run_up(
    settings: Settings, *, host: str, port: int, catalog: Path | None, console: Console
) -> int:
    """Runs until Ctrl-C or SIGTERM (exit code 0) or a failure (1, after one line)."""
    return Up(settings, host=host, port=port, catalog=catalog, console=console).run()
