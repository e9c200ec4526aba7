"""Loads the Lua scripts (package meter.lua: the repository's lua/ folder), expands
`--- @include "includes/x"` once per script, prepends the bounds.

Scripts run by EVALSHA; the clients reload them on NOSCRIPT (after SCRIPT FLUSH or a Redis
restart), which is safe because a NOSCRIPT call never ran.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from meter.bounds import LUA_CONSTANTS
from meter.errors import Code

# Through importlib.resources, not a path beside meter/: the same lookup works in an editable
# install (where pyproject maps meter.lua to lua/) and in a wheel (meter/lua/).
LUA_PACKAGE = "meter.lua"
_INCLUDE_RE = re.compile(r'^--- @include "([a-z_/]+)"\s*$', re.MULTILINE)
INCLUDE_DEPTH_MAX = 8  # includes of includes; deeper means a cycle


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def _lua_dir() -> Traversable:
    return files(LUA_PACKAGE)


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
        body = _lua_dir().joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return _expand(body, seen, depth + 1)

    return _INCLUDE_RE.sub(include, text)


def build(name: str) -> Script:
    text = _lua_dir().joinpath(f"{name}.lua").read_text(encoding="utf-8")
    source = _prelude() + _expand(text, set(), 0)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


@cache
def registry() -> dict[str, Script]:
    """Every operation script by name (file name without .lua)."""
    names = sorted(
        entry.name.removesuffix(".lua")
        for entry in _lua_dir().iterdir()
        if entry.is_file() and entry.name.endswith(".lua")
    )
    return {name: build(name) for name in names}


def get(name: str) -> Script:
    return registry()[name]
