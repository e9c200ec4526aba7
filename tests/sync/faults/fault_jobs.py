"""RQ jobs the fault tests enqueue; they run in a real RQ work-horse (a forked child of a
worker subprocess), importable there as tests.sync.faults.fault_jobs (repo root on
PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from typing import Any


def flush_then_sigkill_before_ack() -> dict[str, Any]:
    """The real flush job, except that the work-horse SIGKILLs itself at the first batch
    ack: after SQL committed the batch, before XACK (a crash there, no cleanup at all)."""
    from sync import limits
    from sync.flush import Flusher
    from worker import jobs

    # One bucket at a time, as the test counts on (bucket 0 first, and nothing after it
    # committed): with parallel workers another bucket's batch may commit before the kill.
    limits.FLUSH_WORKERS = 1  # type: ignore[misc]  # a test hook on a Final
    real_ack = Flusher._ack

    def ack_or_die(
        self: Flusher,
        journal: str,
        lock: str,
        token: str,
        ids: list[str],
        committed: str,
        *,
        release: bool = False,
    ) -> list[int]:
        if ids:  # a batch's ack (the lock release acks nothing)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_ack(self, journal, lock, token, ids, committed, release=release)

    Flusher._ack = ack_or_die  # type: ignore[method-assign]  # this work-horse only
    return jobs.flush_journal()
