"""How far behind SQL is: per-bucket journal length, pending entries, oldest unflushed age;
queue depths, failed jobs, dead letters, detected Redis losses and Stripe events not applied."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine, func, select

from meter.keys import Keys
from meter.ops import as_text, now_ms
from sync.epoch import read_state
from sync.flush import GROUP, group_info
from sync.journal import stream_ms
from sync.models import T_DEAD, T_GAPS, T_STRIPE_EVENTS
from sync.purchases import UNAPPLIED_EVENT_STATUSES


@dataclass
class BucketStatus:
    bucket: int
    journal_length: int
    pending: int
    undelivered: int
    oldest_unflushed_age_ms: int | None


@dataclass
class SyncStatus:
    buckets: list[BucketStatus]
    queues: dict[str, int]
    failed_jobs: int
    dead_letters: int
    gaps: int
    redis_lost: dict[str, Any] | None
    # Stripe events stored but not (yet) applied, by status: received, retrying, failed.
    stripe_events_unapplied: dict[str, int] = field(default_factory=dict)
    unflushed_total: int = field(init=False)
    oldest_unflushed_age_ms: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.unflushed_total = sum(b.pending + b.undelivered for b in self.buckets)
        ages = [b.oldest_unflushed_age_ms for b in self.buckets if b.oldest_unflushed_age_ms]
        self.oldest_unflushed_age_ms = max(ages) if ages else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bucket_status(client: redis.Redis, keys: Keys, bucket: int, now: int) -> BucketStatus:
    journal = keys.journal(bucket)
    length = int(client.xlen(journal))
    group = group_info(client, journal) if length else None
    if group is None:
        first = client.xrange(journal, count=1) if length else []
        age = now - stream_ms(as_text(first[0][0])) if first else None
        return BucketStatus(bucket, length, 0, length, age)
    pending = int(group["pending"])
    last = as_text(group["last-delivered-id"])
    undelivered_first = client.xrange(journal, min=f"({last}", count=1)
    lag = group.get("lag")
    undelivered = int(lag) if lag is not None else len(undelivered_first)
    oldest: list[int] = []
    if pending:
        summary = client.xpending(journal, GROUP)
        if summary["min"] is not None:  # acknowledged since XINFO answered
            oldest.append(stream_ms(as_text(summary["min"])))
    if undelivered_first:
        oldest.append(stream_ms(as_text(undelivered_first[0][0])))
    age = now - min(oldest) if oldest else None
    return BucketStatus(bucket, length, pending, undelivered, age)


def sync_status(
    client: redis.Redis,
    engine: Engine,
    keys: Keys,
    queue_depths: dict[str, int] | None = None,
    failed_jobs: int = 0,
) -> SyncStatus:
    now = now_ms()
    buckets = [bucket_status(client, keys, b, now) for b in keys.all_buckets()]
    with engine.connect() as conn:
        dead = conn.execute(
            select(func.count())
            .select_from(T_DEAD)
            .where(T_DEAD.c.journal.like(f"{keys.prefix}:%"))
        ).scalar_one()
        gaps = conn.execute(
            select(func.count())
            .select_from(T_GAPS)
            .where(T_GAPS.c.journal.like(f"{keys.prefix}:%"))
        ).scalar_one()
        unapplied = conn.execute(
            select(T_STRIPE_EVENTS.c.status, func.count())
            .where(T_STRIPE_EVENTS.c.status.in_(UNAPPLIED_EVENT_STATUSES))
            .group_by(T_STRIPE_EVENTS.c.status)
        ).all()
    lost = read_state(engine, keys, "redis_lost")
    return SyncStatus(
        buckets=buckets,
        queues=dict(queue_depths or {}),
        failed_jobs=failed_jobs,
        dead_letters=int(dead),
        gaps=int(gaps),
        redis_lost=json.loads(lost) if lost else None,
        stripe_events_unapplied={str(status): int(n) for status, n in unapplied},
    )
