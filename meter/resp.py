"""RESP2 request bytes of a round of commands, built in one pass.

The script runner and the async client send a round of script calls (hundreds of charges'
KEYS and ARGV with the async client) as one write (meter/rounds.py). redis-py encodes and
frames each argument separately; here every argument is framed into one str and encoded
once, which is exact when the text is ASCII (a str's length is then its byte length).
Anything else (UTF-8 in a description, bytes) takes the per-argument path.
"""

from __future__ import annotations

from collections.abc import Sequence

Arg = str | int | bytes


def pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """The bytes of `commands` as RESP2 arrays of bulk strings, in order."""
    parts: list[str] = []
    for command in commands:
        parts.append(f"*{len(command)}\r\n")
        for arg in command:
            if type(arg) is not str:
                return _pack_each(commands)
            parts.append(f"${len(arg)}\r\n{arg}\r\n")
    text = "".join(parts)
    if text.isascii():
        return text.encode()
    return _pack_each(commands)


def _bulk(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        data = arg
    elif isinstance(arg, str):
        data = arg.encode()
    else:
        assert type(arg) is int, f"not a command argument: {arg!r}"
        data = str(arg).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _pack_each(commands: Sequence[Sequence[Arg]]) -> bytes:
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        out.extend(_bulk(arg) for arg in command)
    return b"".join(out)
