"""The worker's supervisor restarts a dead child after a bounded, growing delay, and the
backoff every reconnect uses stays within its cap."""

from __future__ import annotations

import os
import time

from worker.supervisor import (
    CHILD_RESTART_DELAY_MAX_S,
    CHILD_RESTART_DELAY_MIN_S,
    REDIS_RETRY_DELAY_FIRST_S,
    REDIS_RETRY_DELAY_MAX_S,
    Backoff,
    Child,
)


def _exit_at_once() -> None:
    os._exit(3)


def _wait_dead(child: Child) -> None:
    deadline = time.monotonic() + 10
    while child.alive():
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(REDIS_RETRY_DELAY_FIRST_S, REDIS_RETRY_DELAY_MAX_S)
    delays = [b.next_s() for _ in range(10)]
    assert delays[0] == REDIS_RETRY_DELAY_FIRST_S
    assert max(delays) == REDIS_RETRY_DELAY_MAX_S
    assert delays == sorted(delays)
    b.reset()
    assert b.next_s() == REDIS_RETRY_DELAY_FIRST_S


def test_a_child_that_keeps_dying_is_restarted_at_a_bounded_rate() -> None:
    child = Child("test-child", _exit_at_once)
    child.check(time.monotonic())
    first_pid = child.proc.pid if child.proc else None
    assert first_pid is not None
    restarts_at: list[float] = []
    for _ in range(4):
        _wait_dead(child)
        died_s = time.monotonic()
        child.check(died_s)  # notices the death, schedules the restart
        assert child.proc is None
        delay_s = child.start_due_s - died_s
        # start_due_s - died_s loses a few ulps: compare with a microsecond's slack.
        assert CHILD_RESTART_DELAY_MIN_S - 1e-6 <= delay_s <= CHILD_RESTART_DELAY_MAX_S + 1e-6
        restarts_at.append(delay_s)
        child.check(child.start_due_s)  # due: started again
        assert child.proc is not None and child.proc.pid != first_pid
    assert restarts_at == sorted(restarts_at) and restarts_at[-1] > restarts_at[0]
    _wait_dead(child)
    assert child.proc is not None and child.proc.exitcode == 3
