"""Putting settings SQL committed in force in Redis, where the scripts read them.

SQL is written first, so a wallet hydrated meanwhile reads the new value. Redis then gets
what SQL holds, re-read until a round saw no change, so of two concurrent changes Redis ends
with SQL's, whichever wrote Redis last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

# Rounds of "write Redis, re-read SQL" a change makes at most: another only when a
# concurrent change committed in between; past this, the later writer's rounds settle it.
ROUNDS_MAX: Final = 5

T = TypeVar("T")


def until_agreed(
    saved: T,
    write: Callable[[T], object],
    read: Callable[[], T],
    same: Callable[[T, T], bool] = lambda a, b: a == b,
) -> T:
    """write(saved), then read SQL again, until what was written is what SQL holds (or
    ROUNDS_MAX rounds) -> what SQL holds."""
    for _ in range(ROUNDS_MAX):
        write(saved)
        now = read()
        if same(now, saved):
            return now
        saved = now
    return saved
