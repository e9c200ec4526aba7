"""The journal -> SQL flush of one bucket, exactly once.

Order per batch: read through the consumer group, write to SQL and commit, then XACK and
trim (one script, `flush_ack`). A crash before the commit leaves the entries pending; a
crash after it leaves them pending too, and writing them again inserts nothing (the rows
are keyed by entry id). One flusher per bucket at a time (a lock with a TTL, renewed per
batch), so entries are applied in journal order; a new holder first reclaims what a dead
flusher left pending (XAUTOCLAIM), then reads new entries.

What SQL refuses (the dead-letter rule): money Redis acknowledged is dead-lettered only for
an error that belongs to that one entry, never for one that would fail any entry.
- An error of a class that says nothing about the data (OperationalError: connection, disk,
  lock; ProgrammingError: a renamed column or table, a missing permission; InternalError;
  NotSupportedError; InterfaceError; an invalidated connection) is systemic: the flush
  stops and raises, its transaction rolls back, nothing is acknowledged or trimmed, and the
  next flush job tries the same entries again.
- A DataError or IntegrityError on the batch sends each entry to SQL alone. An entry that
  fails alone with one of them is tried once more as a canary: a copy with a fresh id and
  without its optional text fields (description, metadata, reference, idempotency key,
  source, tool, hold id), in a savepoint that is always rolled back. If the canary fails
  too, the cause is not the entry's own data (a constraint every insert breaks): systemic,
  the flush stops. Only if the canary passes is the entry dead-lettered (table
  dead_letters; `creditmeter deadletters retry` re-drives it).
- An entry that does not parse at all (MalformedEntry) is dead-lettered at once.

Progress is kept in the Redis hash Keys.flush_progress() for status and /readyz: ok_at_ms
after each committed batch and after each pass over the buckets that raised nothing; error
(one line, at most limits.FLUSH_ERROR_LEN_MAX characters) and error_at_ms when a flush
fails. A flush is failing while error_at_ms is later than ok_at_ms.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, cast

import redis
from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from meter import Meter, runner
from meter.errors import Code
from meter.keys import Keys
from meter.ops import as_text
from meter.redis_conn import text_twin
from meter.signatures import FLUSH_ACK, Reply
from meter.times import now_ms
from meter.wire import OPTIONAL_TEXT_FIELDS
from meter.wire import JournalField as F
from sync import limits
from sync.db import write_transaction
from sync.idempotency import restore_lost_keys
from sync.journal import Entry, MalformedEntry, parse, raw_entry_id, sortable, unsortable
from sync.models import T_CURSORS, T_DEAD, T_GAP_ENTRIES, T_GAPS, T_LEDGER
from sync.sqlops import insert_ignore
from sync.writer import WriteResult, advance_cursor, read_cursor, write_entries

log = logging.getLogger(__name__)

# Stream replies as text_redis decodes them; redis-py's stubs give every RESP shape's union.
StreamPage = list[tuple[str, dict[str, str]]]
PendingPage = list[tuple[str, dict[str, str] | None]]  # a trimmed pending entry has None
GROUP = "flush"  # the one consumer group every flusher reads the journals through
# The optional text fields of a journal entry (description, metadata, reference, idempotency
# key, source, tool, hold and charge ids): the canary leaves them out, keeping only what every
# entry of its kind has.
CANARY_DROPPED_FIELDS = OPTIONAL_TEXT_FIELDS
# Test hook, unset in production (tests/sync/faults/test_worker_kills.py): a flusher that has
# committed a batch writes its bucket to this file and waits there, before the XACK, until the
# test kills it: the kill lands mid-flush every time instead of by luck.
TEST_PAUSE_FILE = os.environ.get("CREDITMETER_TEST_FLUSH_PAUSE_FILE", "")


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class BucketFlush:
    bucket: int
    entries: int = 0
    ledger_inserted: int = 0
    hold_events_inserted: int = 0
    dead_lettered: int = 0
    batches: int = 0
    reclaimed: int = 0
    topup_attempts: list[str] = field(default_factory=list)  # claimed by its entries


@dataclass
class Batch:
    """Entries as read (fields None: trimmed while pending), those that parsed, and those
    that did not with why (dead-lettered)."""

    raw: PendingPage
    parsed: list[Entry] = field(default_factory=list)
    dead: list[tuple[str, dict[Any, Any], str]] = field(default_factory=list)


class LockLost(RuntimeError):
    """Another flusher took the bucket (this one was too slow); it stops at once."""


class Flusher:
    def __init__(
        self,
        client: redis.Redis,
        engine: Engine,
        keys: Keys,
        *,
        consumer: str | None = None,
        batch_max: int = limits.FLUSH_BATCH_MAX,
        workers: int | None = None,
        lock_ttl_ms: int = limits.FLUSH_LOCK_TTL_MS,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.redis = client
        # Entries are read as text decoded by hiredis in C, not field by field in Python.
        self.text_redis = text_twin(client)
        self.engine = engine
        self.keys = keys
        self.consumer = consumer or consumer_name()
        self.batch_max = batch_max
        self.workers = max(1, limits.FLUSH_WORKERS if workers is None else workers)
        self.lock_ttl_ms = lock_ttl_ms
        self.clock_ms = clock_ms
        self._gap_checked: set[int] = set()  # once per bucket per flusher: a SQL read each

    # --- public ------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the text connections this flusher opened (the caller's client stays open):
        a long-lived process that makes a flusher per call must not leak them."""
        self.text_redis.close()

    def flush_all(self, budget_s: float = limits.FLUSH_JOB_BUDGET_S) -> list[BucketFlush]:
        """Flushes every bucket not locked by another flusher, until empty or out of time;
        on PostgreSQL `workers` buckets at a time (each under its own lock, as separate
        flushers would), in bucket order. The first error stops every worker from taking a
        new bucket and is raised once they are done."""
        deadline = time.monotonic() + budget_s
        buckets = iter(self.keys.all_buckets())
        taking = threading.Lock()
        failed = threading.Event()

        def work() -> list[BucketFlush]:
            out = []
            while not failed.is_set():
                with taking:
                    bucket = next(buckets, None)
                left = deadline - time.monotonic()
                if bucket is None or left <= 0:
                    break
                try:
                    result = self.flush_bucket(bucket, left)
                except BaseException:
                    failed.set()
                    raise
                if result is not None:
                    out.append(result)
            return out

        workers = self.workers if self.engine.dialect.name == "postgresql" else 1
        if workers == 1:
            results = work()
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="flush-bucket") as pool:
                futures = [pool.submit(work) for _ in range(workers)]
            results = [r for f in futures for r in f.result()]
        self._progress_ok()
        return sorted(results, key=lambda r: r.bucket)

    def drain(self, budget_s: float = limits.FLUSH_JOB_BUDGET_S) -> list[BucketFlush]:
        """Passes over every bucket while entries keep coming, within the budget: one job
        then carries a sustained load instead of one job (fork, connections) per burst."""
        deadline = time.monotonic() + budget_s
        out: list[BucketFlush] = []
        while True:
            results = self.flush_all(deadline - time.monotonic())
            out += results
            if not any(r.entries for r in results) or time.monotonic() >= deadline:
                return out

    def flush_bucket(
        self, bucket: int, budget_s: float = limits.FLUSH_JOB_BUDGET_S
    ) -> BucketFlush | None:
        """None when another flusher holds the bucket; else what this call wrote."""
        token = uuid.uuid4().hex
        lock = self.keys.flush_lock(bucket)
        if not self.redis.set(lock, token, nx=True, px=self.lock_ttl_ms):
            return None
        result = BucketFlush(bucket)
        try:
            self._flush_locked(bucket, token, result, budget_s)
        except Exception as exc:
            self._progress_error(bucket, exc)
            raise
        finally:
            self._release(bucket, token)
        return result

    def _flush_locked(self, bucket: int, token: str, result: BucketFlush, budget_s: float) -> None:
        """Reclaims what a dead flusher left, then flushes batches until empty or out of time."""
        journal = self.keys.journal(bucket)
        self._ensure_group(journal)
        if bucket not in self._gap_checked:
            self._check_gap(bucket, journal)
            self._gap_checked.add(bucket)
        result.reclaimed = self._reclaim(journal)
        deadline = time.monotonic() + budget_s
        for batch in self._pending_batches(journal, deadline):
            self._flush_batch(bucket, journal, batch, token, result)
        for batch in self._new_batches(journal, deadline):
            self._flush_batch(bucket, journal, batch, token, result)

    def _pending_batches(self, journal: str, deadline: float) -> Iterator[Batch]:
        """What this consumer holds pending: read from the start each time (an entry leaves
        that list only when acknowledged), so never ahead."""
        while time.monotonic() < deadline:
            batch = self._read_batch(journal, "0")
            if not batch.raw:
                return
            yield batch

    def _new_batches(self, journal: str, deadline: float) -> Iterator[Batch]:
        """New entries, each batch read and parsed while SQL writes the one before (the
        driver waits on the database without the GIL). A batch read ahead and never written
        (an error, a lost lock) stays pending: the bucket's next flusher reclaims it."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flush-read") as reader:
            ahead: Future[Batch] | None = reader.submit(self._read_batch, journal, ">")
            while ahead is not None:
                batch = ahead.result()
                if not batch.raw:
                    return
                ahead = None
                if time.monotonic() < deadline:
                    ahead = reader.submit(self._read_batch, journal, ">")
                yield batch

    # --- steps ---------------------------------------------------------------------------

    def _ensure_group(self, journal: str) -> None:
        try:
            self.redis.xgroup_create(journal, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _reclaim(self, journal: str) -> int:
        """Takes over every pending entry (holding the lock, no one else is working them)."""
        total, start = 0, "0-0"
        while True:
            # Without JUSTID: redis-py drops the cursor from a JUSTID reply.
            reply = self.redis.xautoclaim(
                journal,
                GROUP,
                self.consumer,
                min_idle_time=0,
                start_id=start,
                count=self.batch_max,
            )
            start, claimed = as_text(reply[0]), reply[1]
            total += len(claimed)
            if len(reply) > 2 and reply[2]:  # trimmed away while pending: nothing to write
                self.redis.xack(journal, GROUP, *reply[2])
            if start == "0-0":
                return total

    def _read_batch(self, journal: str, start: str) -> Batch:
        """Up to batch_max entries, parsed; one that does not parse is set aside, dead."""
        reply = cast(
            list[tuple[str, PendingPage]],
            self.text_redis.xreadgroup(
                GROUP, self.consumer, {journal: start}, count=self.batch_max
            ),
        )
        batch = Batch(list(reply[0][1]) if reply else [])
        for sid, fields in batch.raw:
            if fields is None:  # a pending entry trimmed away: nothing left to write
                continue
            try:
                batch.parsed.append(parse(sid, fields))
            except MalformedEntry as exc:
                batch.dead.append((sid, fields, f"malformed: {exc}"))
        return batch

    def _flush_batch(
        self, bucket: int, journal: str, batch: Batch, token: str, result: BucketFlush
    ) -> None:
        parsed, dead = batch.parsed, batch.dead
        last = batch.raw[-1][0]

        def commit(conn: Connection) -> tuple[WriteResult, str]:
            written = self._write(conn, bucket, parsed, dead)
            return written, advance_cursor(conn, journal, sortable(last), self.clock_ms())

        written, cursor = write_transaction(self.engine, commit)
        if TEST_PAUSE_FILE:
            _pause_until_killed(TEST_PAUSE_FILE, bucket)
        ids = [sid for sid, _ in batch.raw]
        # Trim below everything SQL confirmed, which may be beyond this batch (a reclaimed
        # batch of old entries comes after newer ones were written).
        acked = self._ack(journal, self.keys.flush_lock(bucket), token, ids, unsortable(cursor))
        result.batches += 1
        result.entries += len(batch.raw)
        result.ledger_inserted += written.ledger_inserted
        result.hold_events_inserted += written.hold_events_inserted
        result.topup_attempts += written.topup_attempts
        result.dead_lettered += len(dead)
        if acked.int("lock_held") != 1:
            raise LockLost(f"bucket {bucket}: lock lost while flushing")
        self._progress_ok()

    def _write(
        self,
        conn: Connection,
        bucket: int,
        parsed: list[Entry],
        dead: list[tuple[str, dict[Any, Any], str]],
    ) -> WriteResult:
        """The batch in one savepoint; if SQL refuses it for what may be one entry's data,
        entry by entry, and an entry that fails alone while its canary passes joins `dead`
        (the dead-letter table) with the error. Anything systemic raises (module docstring)."""
        try:
            with conn.begin_nested():
                written = write_entries(conn, bucket, parsed, self.clock_ms())
        except DBAPIError as exc:
            if not _may_be_one_entry(exc):
                raise
            written = WriteResult()
            for entry in parsed:
                try:
                    with conn.begin_nested():
                        one = write_entries(conn, bucket, [entry], self.clock_ms())
                except DBAPIError as one_exc:
                    if not _may_be_one_entry(one_exc):
                        raise
                    self._canary(conn, bucket, entry, one_exc)
                    dead.append((entry.stream_id, entry.fields, f"sql: {one_exc.orig!r}"))
                    continue
                written.add(one)
        if dead:
            self._dead_letter(conn, self.keys.journal(bucket), dead)
        return written

    def _canary(self, conn: Connection, bucket: int, entry: Entry, error: DBAPIError) -> None:
        """Raises `error` unless a neutral copy of the entry (fresh ids, no free text) is
        accepted: then the entry's own data is what SQL refused. The copy never stays."""
        canary = neutral_copy(entry)
        savepoint = conn.begin_nested()
        try:
            write_entries(conn, bucket, [canary], self.clock_ms())
        except DBAPIError as canary_exc:
            savepoint.rollback()
            log.error(
                "entry %s and its neutral canary both fail: systemic, not dead-lettered: %s",
                entry.id,
                _one_line(canary_exc),
            )
            raise error from canary_exc
        savepoint.rollback()

    def _dead_letter(
        self, conn: Connection, journal: str, dead: list[tuple[str, dict[Any, Any], str]]
    ) -> None:
        rows = []
        for sid, fields, error in dead:
            log.error("journal %s entry %s dead-lettered: %s", journal, sid, error)
            rows.append(
                {
                    "journal": journal,
                    "stream_id": sortable(sid),
                    "fields": json.dumps(fields),  # read decoded: str keys and values
                    "error": error[: limits.DEAD_LETTER_ERROR_LEN_MAX],
                    "created_at_ms": self.clock_ms(),
                }
            )
        conn.execute(insert_ignore(conn, T_DEAD), rows)

    def _ack(
        self,
        journal: str,
        lock: str,
        token: str,
        ids: list[str],
        committed: str,
        *,
        release: bool = False,
    ) -> Reply:
        keys = FLUSH_ACK.key_list(journal=journal, lock=lock)
        args = FLUSH_ACK.arg_list(
            group=GROUP,
            token=token,
            lock_ttl_ms="0" if release else str(self.lock_ttl_ms),
            committed=committed,
            ids=[{"stream_id": sid} for sid in ids],
        )
        reply = FLUSH_ACK.read(runner.run(self.redis, FLUSH_ACK.script, keys, args))
        assert reply.code == Code.OK, reply
        return reply

    def _release(self, bucket: int, token: str) -> None:
        """Frees the bucket if this flusher still holds it; after an error, even a Redis one.
        Redis unreachable (restarting): retried with backoff for FLUSH_RELEASE_RETRY_S."""
        deadline = time.monotonic() + limits.FLUSH_RELEASE_RETRY_S
        delay_s = 0.05
        while True:
            try:
                self._ack(
                    self.keys.journal(bucket),
                    self.keys.flush_lock(bucket),
                    token,
                    [],
                    "",
                    release=True,
                )
                return
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() + delay_s > deadline:
                    break
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, limits.FLUSH_RELEASE_RETRY_DELAY_S_MAX)
            except redis.RedisError:
                break
        log.warning("could not release the lock of bucket %d; it expires by itself", bucket)

    # --- progress, for status and /readyz ----------------------------------------------

    def _progress_ok(self) -> None:
        self.redis.hset(self.keys.flush_progress(), "ok_at_ms", str(self.clock_ms()))

    def _progress_error(self, bucket: int, exc: BaseException) -> None:
        """Best effort: the flush error itself is what the caller must see."""
        text = f"bucket {bucket}: {_one_line(exc)}"[: limits.FLUSH_ERROR_LEN_MAX]
        try:
            self.redis.hset(
                self.keys.flush_progress(),
                mapping={"error": text, "error_at_ms": str(self.clock_ms())},
            )
        except redis.RedisError:
            log.warning("could not record the flush error in Redis: %s", text)

    # --- Redis lost data -----------------------------------------------------------------

    def _check_gap(self, bucket: int, journal: str) -> None:
        """If SQL committed entries beyond what the consumer group remembers, Redis lost the
        end of its data (append-only file): record which entries SQL has that Redis lost."""
        with self.engine.connect() as conn:
            cursor = read_cursor(conn, journal)
        if cursor is None:
            return
        group = group_info(self.redis, journal)
        delivered = "0-0" if group is None else as_text(group["last-delivered-id"])
        if sortable(delivered) >= cursor:
            return
        lost = self._lost_entries(bucket, journal, delivered, cursor)

        def reset_cursor(conn: Connection) -> None:
            # From now on the group's position is the truth again.
            conn.execute(
                T_CURSORS.update()
                .where(T_CURSORS.c.journal == journal)
                .values(stream_id=sortable(delivered), updated_at_ms=self.clock_ms())
            )

        if lost == []:  # the entries are all still in the stream: only the position lagged
            write_transaction(self.engine, reset_cursor)
            return

        def record(conn: Connection) -> None:
            gap_id = conn.execute(
                T_GAPS.insert().returning(T_GAPS.c.id),
                {
                    "journal": journal,
                    "after_stream_id": sortable(delivered),
                    "through_stream_id": cursor,
                    "lost_entries": -1 if lost is None else len(lost),
                    "detected_at_ms": self.clock_ms(),
                },
            ).scalar_one()
            if lost:
                conn.execute(
                    insert_ignore(conn, T_GAP_ENTRIES),
                    [{"gap_id": gap_id, "entry_id": e} for e in lost],
                )
            reset_cursor(conn)

        write_transaction(self.engine, record)
        log.error(
            "journal %s: Redis lost entries after %s that SQL has through %s (%s entries)",
            journal,
            delivered,
            unsortable(cursor),
            "all" if lost is None else len(lost),
        )
        if lost:
            # Their wallets stayed in Redis (no reload): a retry of one of those requests
            # must be answered from SQL, not applied a second time.
            restore_lost_keys(Meter(self.redis, keys=self.keys), self.engine, lost)

    def _lost_entries(
        self, bucket: int, journal: str, delivered: str, cursor: str
    ) -> list[str] | None:
        """Ids of ledger entries SQL has in (delivered, cursor] that the stream no longer
        holds; None when the whole journal is gone (the group starts from nothing)."""
        if delivered in ("0-0", "0"):
            return None
        page = cast(
            StreamPage,
            self.text_redis.xrange(journal, min=f"({delivered}", max=unsortable(cursor)),
        )
        present = {raw_entry_id(f) for _, f in page}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(T_LEDGER.c.id, T_LEDGER.c.account_id, T_LEDGER.c.credit_type)
                .where(
                    T_LEDGER.c.bucket == bucket,
                    T_LEDGER.c.stream_id > sortable(delivered),
                    T_LEDGER.c.stream_id <= cursor,
                )
                .order_by(T_LEDGER.c.stream_id)
            ).all()
        # Ledger rows carry no key prefix: a database shared by deployments (tests, the bench)
        # holds others' rows in the range; only wallets this Redis has are ours.
        wallets = sorted({(a, ct) for _, a, ct in rows})
        pipe = self.redis.pipeline(transaction=False)
        for a, ct in wallets:
            pipe.exists(self.keys.wallet(a, ct))
        ours = {w for w, found in zip(wallets, pipe.execute(), strict=True) if found}
        return [i for i, a, ct in rows if i not in present and (a, ct) in ours]


def group_info(client: redis.Redis, journal: str) -> dict[str, Any] | None:
    """XINFO GROUPS of the flush group (keys str, values as the client reads them)."""
    for group in client.xinfo_groups(journal):
        if as_text(group["name"]) == GROUP:
            return dict(group)
    return None


def _may_be_one_entry(exc: DBAPIError) -> bool:
    """Only data and constraint errors can belong to one entry; every other class of error
    (connection, schema, permission, disk, server) fails any entry: retry later, never
    dead-letter."""
    return isinstance(exc, DataError | IntegrityError) and not exc.connection_invalidated


def _pause_until_killed(marker: str, bucket: int) -> None:
    """The TEST_PAUSE_FILE hook: committed, not acknowledged, and never going on."""
    with open(marker, "w") as out:
        out.write(str(bucket))
    while True:
        time.sleep(1)


def _one_line(exc: BaseException) -> str:
    """The driver's own message, first line only (no SQLAlchemy statement dump)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def neutral_copy(entry: Entry) -> Entry:
    """The entry with a fresh id (nothing SQL already holds can conflict) and without its
    optional text fields: what every entry of its kind writes, nothing this one chose."""
    fields = {k: v for k, v in entry.fields.items() if k not in CANARY_DROPPED_FIELDS}
    fields[F.ID] = "canary-" + uuid.uuid4().hex[:16]
    return replace(entry, id=fields[F.ID], fields=fields)
