"""meter/resp.py packs a round exactly as redis-py would, and meter/rounds.py keeps each reply
(an error reply as its exception, in place) on a connection fit for the next round."""

from __future__ import annotations

import redis
import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import Connection

from meter import resp, rounds

ROUND = [
    ("EVALSHA", "0" * 40, "2", "cm:{3}:tools", "cm:{3}:journal", "now", ""),
    ("SET", "k", "été"),  # UTF-8: 2 bytes per é, so the ASCII shortcut must not apply
    ("SET", b"raw\x00bytes", 17),
    ("GET", ""),
]


def _redis_py_bytes(commands: list[tuple[object, ...]]) -> bytes:
    return b"".join(Connection().pack_commands(commands))


def test_ascii_round_is_byte_for_byte_what_redis_py_sends() -> None:
    assert resp.pack(ROUND[:1]) == _redis_py_bytes(ROUND[:1])


def test_utf8_bytes_and_int_arguments_are_framed_by_their_byte_length() -> None:
    assert resp.pack(ROUND) == _redis_py_bytes(ROUND)
    assert b"$5\r\n\xc3\xa9t\xc3\xa9\r\n" in resp.pack(ROUND)


COMMANDS = [
    ("SET", "{key}", "5"),
    ("LPUSH", "{key}", "x"),
    ("INCR", "{key}"),
    ("EVALSHA", "f" * 40, "0"),
]


def _round_of(key: str) -> list[tuple[str, ...]]:
    return [tuple(arg.format(key=key) for arg in command) for command in COMMANDS]


def _check_in_place(replies: list[object]) -> None:
    assert replies[0] == b"OK"
    assert isinstance(replies[1], redis.exceptions.ResponseError)  # WRONGTYPE
    assert replies[2] == 6
    assert isinstance(replies[3], redis.exceptions.NoScriptError)


def test_a_round_answers_every_command_in_place_with_errors_as_exceptions(
    redis_url: str, key_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"{key_prefix}:resp"
    _check_in_place(rounds.send(client.connection_pool, _round_of(key)))
    again = rounds.send(client.connection_pool, [("GET", key)])
    assert again == [b"6"], "the connection went back to the pool in step with its replies"
    client.close()


async def test_an_async_round_answers_every_command_in_place_with_errors_as_exceptions(
    redis_url: str, key_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    key = f"{key_prefix}:resp"
    _check_in_place(await rounds.send_async(client.connection_pool, _round_of(key)))
    again = await rounds.send_async(client.connection_pool, [("GET", key)])
    assert again == [b"6"], "the connection went back to the pool in step with its replies"
    await client.aclose()
