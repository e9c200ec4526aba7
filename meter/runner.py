"""The one script runner: calls go by EVALSHA; the calls answered NOSCRIPT (the script cache
was flushed, or Redis restarted) go again by EVAL with the source. That is safe: a NOSCRIPT
call never ran. EVAL, which also caches the script again, cannot meet another flush.

`send` is sans-IO (a generator of command rounds), so one logic serves the synchronous
`run` and the async client's pipelines.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions

from meter import rounds, scripts, signatures
from meter.redis_conn import is_cluster


@dataclass(frozen=True, slots=True)
class Call:
    script: str
    keys: Sequence[str]
    args: Sequence[str]


CommandArgs = tuple[Any, ...]
Rounds = Generator[list[CommandArgs], list[Any], list[Any]]


def _command(call: Call, with_source: bool) -> CommandArgs:
    script = scripts.get(call.script)
    cmd, body = ("EVAL", script.source) if with_source else ("EVALSHA", script.sha)
    return (cmd, body, str(len(call.keys)), *call.keys, *call.args)


def send(calls: Sequence[Call]) -> Rounds:
    """Yields the commands of a round, receives their replies (an error as its exception
    value, in place) and returns one reply per call."""
    replies = yield [_command(c, with_source=False) for c in calls]
    missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing:
        again = yield [_command(calls[i], with_source=True) for i in missing]
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    return replies


def run(client: redis.Redis, script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
    """One script call, synchronously; an error reply raises."""
    calls = send([Call(script, keys, args)])
    try:
        commands = next(calls)
        while True:
            commands = calls.send(_round(client, commands))
    except StopIteration as stop:
        (reply,) = stop.value
    if isinstance(reply, Exception):
        raise reply
    return reply


def only_reply(script: str, reply: Any) -> Any:
    """The reply of a call that carried one request: a batched script answers a list."""
    if signatures.ALL[script].batched:
        (one,) = reply
        return one
    return reply


def _round(client: redis.Redis, commands: list[CommandArgs]) -> list[Any]:
    if is_cluster(client):
        return [_execute(client, c) for c in commands]  # each to its slot's node
    return rounds.send(client.connection_pool, commands)


def _execute(client: redis.Redis, command: CommandArgs) -> Any:
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    except redis.exceptions.ResponseError as exc:
        return exc
