"""Keeps the worker's children alive: a parent that holds no connection and forks, watches
and restarts them, and passes a stop signal on.

A child that dies is started again after a delay that doubles while it keeps dying soon
after its start (from CHILD_RESTART_DELAY_MIN_S to CHILD_RESTART_DELAY_MAX_S): a fault that
clears is picked up quickly, one that does not costs one restart and one log line per
CHILD_RESTART_DELAY_MAX_S.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

log = logging.getLogger(__name__)

CHILD_POLL_S = 0.2  # a dead child is noticed within this
CHILD_RESTART_DELAY_MIN_S = 0.1  # the first restart: at once, but never a busy loop
CHILD_RESTART_DELAY_MAX_S = 5.0  # a child that keeps dying restarts at most this often
CHILD_HEALTHY_S = 30.0  # a child that lived this long died of a new fault: the delay resets
REDIS_RETRY_DELAY_FIRST_S = 0.05  # a child's first retry after a Redis error: a blip, at once
# A child's Redis retries back off to this and no further: flushing resumes within about a
# second of Redis answering again, for one attempt (and one log line) per second meanwhile.
REDIS_RETRY_DELAY_MAX_S = 1.0
COMM_LEN_MAX = 15  # Linux keeps this many bytes of a process name (/proc/<pid>/comm)


class Backoff:
    """Delays that double from first_s up to max_s; reset() after a success."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._next_s = first_s

    def next_s(self) -> float:
        delay_s = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay_s

    def reset(self) -> None:
        self._next_s = self.first_s


def name_process(name: str) -> None:
    """Names this process in `ps`/`top` and /proc/<pid>/comm, where a test or an operator
    finds it (Linux only; elsewhere the name stays the interpreter's)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name[:COMM_LEN_MAX])


def _child_entry(name: str, target: Callable[[], None]) -> None:
    # The fork copied the supervisor's handlers: a child must never run them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    name_process(name)
    target()


@dataclass
class Child:
    name: str
    target: Callable[[], None]
    proc: BaseProcess | None = None
    started_at_s: float = 0.0
    start_due_s: float = 0.0  # monotonic time of the next (re)start
    stopped_pid: int | None = None  # the child process already asked to stop
    delays: Backoff = field(
        default_factory=lambda: Backoff(CHILD_RESTART_DELAY_MIN_S, CHILD_RESTART_DELAY_MAX_S)
    )

    def start(self) -> None:
        self.proc = multiprocessing.get_context("fork").Process(
            target=_child_entry, args=(self.name, self.target), name=self.name
        )
        self.proc.start()
        self.started_at_s = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def check(self, now_s: float) -> None:
        """Starts the child if it is due: the first time, or after it died."""
        if self.alive():
            return
        if self.proc is not None:  # it died: schedule its restart once
            if now_s - self.started_at_s >= CHILD_HEALTHY_S:
                self.delays.reset()
            delay_s = self.delays.next_s()
            log.error(
                "%s (pid %s) exited with code %s; restarting it in %.1f s",
                self.name,
                self.proc.pid,
                self.proc.exitcode,
                delay_s,
            )
            self.proc = None
            self.start_due_s = now_s + delay_s
        if now_s >= self.start_due_s:
            self.start()

    def stop(self) -> None:
        """Asks the running child for a warm shutdown, once (rq takes a second signal for a
        cold one, which kills the running job)."""
        pid = self.proc.pid if self.proc is not None and self.alive() else None
        if pid is None or pid == self.stopped_pid:
            return
        self.stopped_pid = pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def supervise(children: list[Child]) -> None:
    """Runs the children until SIGTERM/SIGINT, then stops them (warm) and waits for them."""
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for c in children:
            c.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping:
            now_s = time.monotonic()
            for c in children:
                c.check(now_s)
            time.sleep(CHILD_POLL_S)
    finally:
        for c in children:  # also one started while the signal was handled
            c.stop()
        for c in children:
            if c.proc is not None:
                c.proc.join()
