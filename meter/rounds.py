"""A round of commands written at once on one pooled connection, and its replies in order.

The script runner (sync) and the async client's batcher send their script calls this way:
one RESP pass over the round (meter/resp.py) and one write, without redis-py's per-command
work (encoding each argument, response callbacks, per-call observability). Replies come back
raw, an error reply in its place as its exception (NoScriptError for NOSCRIPT), so the
runner can resend just those by EVAL.

A connection or timeout error resends the whole round on a fresh connection, as redis-py's
pipeline does (RETRIES in meter/redis_conn.py). That is safe for the meter's scripts: a call
that ran already is answered as a replay by its idempotency record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
import redis.exceptions

from meter import resp


def send(pool: redis.ConnectionPool, commands: Sequence[Sequence[resp.Arg]]) -> list[Any]:
    packed = resp.pack(commands)
    conn = pool.get_connection()

    def write_and_read() -> list[Any]:
        conn.send_packed_command([packed])
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies

    def drop(error: Exception) -> None:
        conn.disconnect()

    try:
        replies: list[Any] = conn.retry.call_with_retry(write_and_read, drop)
        return replies
    finally:
        pool.release(conn)


async def send_async(
    pool: redis.asyncio.ConnectionPool, commands: Sequence[Sequence[resp.Arg]]
) -> list[Any]:
    packed = resp.pack(commands)
    conn = await pool.get_connection()

    async def write_and_read() -> list[Any]:
        await conn.send_packed_command(packed)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies

    async def drop(error: Exception) -> None:
        await conn.disconnect()

    try:
        replies: list[Any] = await conn.retry.call_with_retry(write_and_read, drop)
        return replies
    finally:
        await pool.release(conn)
