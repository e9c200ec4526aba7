"""Loads lua/, expands `--- @include "includes/x"` once per script, prepends the bounds.

Scripts run by EVALSHA; the clients reload them on NOSCRIPT (after SCRIPT FLUSH or a Redis
restart), which is safe because a NOSCRIPT call never ran.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from meter.bounds import LUA_CONSTANTS
from meter.errors import Code

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
_INCLUDE_RE = re.compile(r'^--- @include "([a-z_/]+)"\s*$', re.MULTILINE)
INCLUDE_DEPTH_MAX = 8  # includes of includes; deeper means a cycle


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def _prelude() -> str:
    lines = [f"local {name} = {value}" for name, value in LUA_CONSTANTS.items()]
    lines += [f"local E_{code.name} = {code.value}" for code in Code]
    return "\n".join(lines) + "\n"


def _expand(text: str, seen: set[str], depth: int) -> str:
    assert depth <= INCLUDE_DEPTH_MAX, "include cycle"

    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        body = (LUA_DIR / f"{name}.lua").read_text()
        return _expand(body, seen, depth + 1)

    return _INCLUDE_RE.sub(include, text)


def build(name: str) -> Script:
    source = _prelude() + _expand((LUA_DIR / f"{name}.lua").read_text(), set(), 0)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


@cache
def registry() -> dict[str, Script]:
    """Every operation script by name (file name without .lua)."""
    return {p.stem: build(p.stem) for p in sorted(LUA_DIR.glob("*.lua"))}


def get(name: str) -> Script:
    return registry()[name]
