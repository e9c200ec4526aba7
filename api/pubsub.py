"""One pub/sub connection per API process, shared by every event stream (api/sse.py).

A stream `join`s the events channel of its account's bucket and gets a bounded queue; one
subscriber task per process SUBSCRIBEs to the channels streams need (a channel is dropped
with UNSUBSCRIBE when its last stream leaves), reads every message once and puts it in the
queues of the streams of that account. Queue items:

- a Snapshot: the channel is (re)subscribed; changes from now on will arrive, so the stream
  sends the current state of its wallets. A stream joining a channel already subscribed gets
  one at once; every stream of a channel gets one after redis-py re-subscribed on a new
  connection (messages in between may be lost). `read_snapshot` shares one read among the
  streams of an account that need one at the same time, and bounds the reads in flight: a
  balance read may query SQL, and a reconnect storm must not take the threads charges need.
- a dict: a balance event of the account (lua/includes/balance_event.lua).
- END: the stream must end (its queue overflowed: the client reads slower than its balance
  changes; or the pub/sub connection failed). The browser reconnects and starts from a
  snapshot, so nothing is lost for it and no memory grows for a client that does not read.

After a failure the task reconnects with a doubling backoff and subscribes again for the
streams that joined since. The task starts on the first join and lives as long as the
process (it holds one pool connection); it idles without a wake-up while no stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import redis.asyncio
import redis.exceptions

from meter.redis_conn import discover

log = logging.getLogger("creditmeter.api.pubsub")

QUEUE_ITEMS_MAX = 64  # a client this far behind is not reading: drop it, it reconnects
# How long a new stream's SUBSCRIBE may wait while the task reads: the task reads with this
# timeout, then sends the pending (UN)SUBSCRIBEs, all in one command.
SUBSCRIBE_POLL_S = 0.05
BACKOFF_S_MIN = 0.1  # first pause after the pub/sub connection failed
BACKOFF_S_MAX = 5.0  # a Redis that stays down is tried this often
CLOSE_TIMEOUT_S = 2.0  # closing a failed connection; a dead Redis must not hang the task
# Snapshot reads in flight per process. A balance read may query SQL in the event loop's
# default thread pool (CPU count + 4 threads): leave threads to charges that load a wallet.
SNAPSHOTS_CONCURRENT_MAX = 4

END: Final = "end"


@dataclass(frozen=True)
class Snapshot:
    """Send the account's state: any read started after this item was queued will do."""

    seq: int


Item = dict[str, Any] | Snapshot | str


@dataclass
class _SharedRead:
    started_seq: int
    task: asyncio.Future[str]


@dataclass(eq=False)
class Listener:
    """One stream's place in the hub."""

    channel: bytes
    account_id: str
    queue: asyncio.Queue[Item] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_ITEMS_MAX)
    )
    ended: bool = False

    def offer(self, item: Item) -> bool:
        """Queues the item; False (and the stream is told to end) when the queue is full."""
        if self.ended:
            return True
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            self.end()
            return False

    def end(self) -> None:
        # What is queued is stale once the stream ends: make room for END.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(END)
        self.ended = True


class EventHub:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._pubsub = client.pubsub()
        self._listeners: dict[bytes, dict[str, set[Listener]]] = {}  # channel -> account -> set
        self._sent: set[bytes] = set()  # SUBSCRIBE sent, no UNSUBSCRIBE since
        self._confirmed: set[bytes] = set()  # of those, the ones Redis confirmed
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seq = itertools.count()  # orders snapshot items and snapshot reads
        self._reads: dict[str, _SharedRead] = {}  # account -> its latest snapshot read
        self._read_slots = asyncio.Semaphore(SNAPSHOTS_CONCURRENT_MAX)

    def join(self, channel: str, account_id: str) -> Listener:
        listener = Listener(channel.encode(), account_id)
        accounts = self._listeners.setdefault(listener.channel, {})
        accounts.setdefault(account_id, set()).add(listener)
        if listener.channel in self._confirmed:
            listener.offer(self._snapshot_item())
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return listener

    def leave(self, listener: Listener) -> None:
        accounts = self._listeners.get(listener.channel, {})
        streams = accounts.get(listener.account_id, set())
        streams.discard(listener)
        if not streams:
            accounts.pop(listener.account_id, None)
        if not accounts:
            self._listeners.pop(listener.channel, None)
            self._changed.set()

    async def read_snapshot(
        self, account_id: str, item: Snapshot, read: Callable[[], Awaitable[str]]
    ) -> str:
        """What `read` answers, from a read of the account started after `item` was queued:
        the one in flight if it qualifies, else a new one (then shared with later items)."""
        shared = self._reads.get(account_id)
        if shared is None or shared.started_seq < item.seq:
            shared = _SharedRead(next(self._seq), asyncio.ensure_future(self._bounded(read)))
            self._reads[account_id] = shared
            shared.task.add_done_callback(lambda t: self._read_done(account_id, t))
        # Shielded: a stream that leaves must not cancel the read of the others.
        return await asyncio.shield(shared.task)

    async def _bounded(self, read: Callable[[], Awaitable[str]]) -> str:
        async with self._read_slots:
            return await read()

    def _read_done(self, account_id: str, task: asyncio.Future[str]) -> None:
        shared = self._reads.get(account_id)
        if shared is not None and shared.task is task:
            del self._reads[account_id]
        if not task.cancelled():
            task.exception()  # each waiting stream got it; no "never retrieved" warning

    def _snapshot_item(self) -> Snapshot:
        return Snapshot(next(self._seq))

    def listeners(self) -> int:
        return len(self._all())

    async def aclose(self) -> None:
        """Stops the task and closes its connection (a stream still open gets END)."""
        for listener in self._all():
            listener.end()
            self.leave(listener)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff_s = BACKOFF_S_MIN
        try:
            while True:
                try:
                    await self._step()
                    backoff_s = BACKOFF_S_MIN
                except Exception as exc:
                    if isinstance(exc, redis.exceptions.RedisError | OSError):
                        log.warning("pub/sub connection lost, its event streams end: %r", exc)
                    else:
                        # A message not as balance_event.lua writes it: no stream may hang.
                        log.exception("event hub failed, its event streams end")
                    await self._reset()
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(BACKOFF_S_MAX, 2 * backoff_s)
        finally:
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await self._pubsub.aclose()

    async def _step(self) -> None:
        """Sends pending (un)subscriptions, then reads (or idles while there is nothing)."""
        wanted = set(self._listeners)
        if wanted - self._sent:
            new = wanted - self._sent
            await discover(self._client)
            await self._pubsub.subscribe(*new)
            self._sent |= new
        if self._sent - wanted:
            gone = self._sent - wanted
            await self._pubsub.unsubscribe(*gone)
            self._sent -= gone
            self._confirmed -= gone
        if not self._pubsub.subscribed:
            if not self._listeners:
                # No stream, and Redis confirmed every UNSUBSCRIBE: nothing to read until a
                # join. (A stream that joined during an await above is subscribed next step.)
                self._changed.clear()
                await self._changed.wait()
            return
        msg = await self._pubsub.get_message(timeout=SUBSCRIBE_POLL_S)
        if msg is not None:
            self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        channel: bytes = msg["channel"]
        accounts = self._listeners.get(channel, {})
        if msg["type"] == "subscribe" and channel in self._sent:
            self._confirmed.add(channel)
            for streams in accounts.values():
                for listener in list(streams):
                    self._offer(listener, self._snapshot_item())
        elif msg["type"] == "message" and accounts:
            event = json.loads(msg["data"])
            for listener in list(accounts.get(event["account_id"], ())):
                self._offer(listener, event)

    def _offer(self, listener: Listener, item: Item) -> None:
        if not listener.offer(item):
            log.info("event stream of %s too far behind: ended", listener.account_id)
            self.leave(listener)

    def _all(self) -> list[Listener]:
        return [x for a in self._listeners.values() for s in a.values() for x in s]

    async def _reset(self) -> None:
        """Ends every stream and drops the connection; the next step subscribes afresh for
        the streams that join from now on."""
        for listener in self._all():
            listener.end()
            self.leave(listener)
        self._sent.clear()
        self._confirmed.clear()
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self._pubsub.aclose()


# The hub of each client (the API has one per process); it goes when its client does.
_hubs: weakref.WeakKeyDictionary[redis.asyncio.Redis, EventHub] = weakref.WeakKeyDictionary()


def hub_for(client: redis.asyncio.Redis) -> EventHub:
    hub = _hubs.get(client)
    if hub is None:
        hub = _hubs[client] = EventHub(client)
    return hub


async def close_hub(client: redis.asyncio.Redis) -> None:
    """Ends the client's streams and closes its pub/sub connection (before the client)."""
    hub = _hubs.pop(client, None)
    if hub is not None:
        await hub.aclose()
