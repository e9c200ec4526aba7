"""Removes the stream consumers finished flushers left behind.

Every worker process reads the journals as a consumer named host:pid (sync.flush); Redis
keeps a consumer until it is deleted, so each restart of a worker leaves one per journal
(about 39 MB a day on a busy deployment). A consumer idle longer than CONSUMER_IDLE_MS_MIN
with nothing pending is deleted; one holding pending entries is left for XAUTOCLAIM to take
them over, whatever its age. Deleting a live one is harmless: its next XREADGROUP makes it
again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import redis

from meter import runner
from meter.keys import Keys
from meter.ops import as_text
from sync.flush import GROUP

# A live flusher reads at least every safety flush (10 s) while it holds a bucket; an hour
# without a read means its process is gone (or idle so long that making it again is free).
CONSUMER_IDLE_MS_MIN = 3_600_000
CONSUMERS_PER_JOURNAL_MAX = 10_000  # one pass deletes at most this many per journal


@dataclass
class Pruned:
    deleted: int = 0
    kept_pending: int = 0  # idle long enough, but holding entries: left to XAUTOCLAIM


def _idle_consumers(client: redis.Redis, journal: str, idle_ms_min: int) -> Iterator[str]:
    try:
        consumers = client.xinfo_consumers(journal, GROUP)
    except redis.ResponseError as exc:  # no journal or no group yet: nobody to remove
        if "no such key" in str(exc) or "NOGROUP" in str(exc):
            return
        raise
    for c in consumers[:CONSUMERS_PER_JOURNAL_MAX]:
        if int(c["idle"]) >= idle_ms_min:
            yield as_text(c["name"])


def prune_idle_consumers(
    client: redis.Redis, keys: Keys, idle_ms_min: int = CONSUMER_IDLE_MS_MIN
) -> Pruned:
    """Deletes the flush group's consumers idle at least idle_ms_min with nothing pending."""
    out = Pruned()
    for bucket in keys.all_buckets():
        journal = keys.journal(bucket)
        for name in _idle_consumers(client, journal, idle_ms_min):
            reply = runner.run(client, "consumer_prune", [journal], [GROUP, name])
            if int(reply[1]):
                out.deleted += 1
            else:
                out.kept_pending += 1
    return out
