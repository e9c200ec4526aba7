"""Checks of every argument before any Redis call (SPEC §4 "Numbers"); typed errors on failure.

Nothing is coerced: "10", 10.0, True and 1e3 are not integers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from meter import bounds
from meter.errors import InvalidArgument

ACCOUNT_RE = re.compile(rf"^[A-Za-z0-9_.:@-]{{1,{bounds.ACCOUNT_ID_LEN_MAX}}}$")
CREDIT_TYPE_RE = re.compile(rf"^[a-z0-9_]{{1,{bounds.CREDIT_TYPE_LEN_MAX}}}$")
TOOL_RE = re.compile(rf"^[A-Z0-9_]{{1,{bounds.TOOL_LEN_MAX}}}$")
IDEMPOTENCY_RE = re.compile(rf"^[\x21-\x7e]{{1,{bounds.IDEMPOTENCY_KEY_LEN_MAX}}}$")
ID_RE = re.compile(rf"^[A-Za-z0-9-]{{1,{bounds.ID_LEN_MAX}}}$")
CATEGORIES = ("paid", "promotional")
SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _match(field: str, value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidArgument(field, f"must be {what}")
    return value


def account_id(value: object) -> str:
    return _match("account_id", value, ACCOUNT_RE, "1-128 of [A-Za-z0-9_.:@-]")


def credit_type(value: object) -> str:
    return _match("credit_type", value, CREDIT_TYPE_RE, "1-32 of [a-z0-9_]")


def tool(value: object) -> str:
    return _match("tool", value, TOOL_RE, "1-64 of [A-Z0-9_]")


def idempotency_key(value: object) -> str:
    return _match("idempotency_key", value, IDEMPOTENCY_RE, "1-255 printable ASCII characters")


def entity_id(field: str, value: object) -> str:
    return _match(field, value, ID_RE, "an id")


def integer(field: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass: True must not pass as 1.
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgument(field, f"must be an integer in [{low}, {high}]")
    return value


def credits(field: str, value: object, low: int = 0) -> int:
    return integer(field, value, low, bounds.CREDITS_MAX)


def quantity(value: object) -> int:
    return integer("quantity", value, 1, bounds.QUANTITY_MAX)


def ttl_s(field: str, value: object) -> int:
    return integer(field, value, 1, bounds.HOLD_TTL_S_MAX)


def priority(value: object) -> int:
    return integer("priority", value, 0, bounds.PRIORITY_MAX)


def category(value: object) -> str:
    if value not in CATEGORIES:
        raise InvalidArgument("category", "must be paid or promotional")
    assert isinstance(value, str)
    return value


def storable(field: str, value: str) -> str:
    """Refuses text a supported SQL backend cannot store as given (Redis would take it and
    the flush would dead-letter it): NUL, which PostgreSQL refuses in text, and a lone
    surrogate (U+D800-DFFF), which is not encodable as UTF-8 (so never valid UTF-8 bytes)."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL (U+0000)")
    if SURROGATE_RE.search(value):
        raise InvalidArgument(field, "must be valid Unicode: no lone surrogate (U+D800-DFFF)")
    return value


def text(field: str, value: object, max_chars: int, required: bool = False) -> str:
    """Free text of at most `max_chars` characters (code points): the unit PostgreSQL's
    varchar(n) counts, and what pydantic's max_length and lua/includes/valid.lua count."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > max_chars or (required and not value):
        need = "non-empty " if required else ""
        raise InvalidArgument(field, f"must be {need}text of at most {max_chars} characters")
    return storable(field, value)


def _metadata_text(path: str, value: str) -> None:
    storable(f"metadata{path}", value)


def _check_metadata_value(value: object, path: str, depth: int) -> None:
    """Checks every key and string; the recursion stops at METADATA_DEPTH_MAX levels, far
    below Python's recursion limit."""
    if depth > bounds.METADATA_DEPTH_MAX:
        raise InvalidArgument("metadata", f"nested deeper than {bounds.METADATA_DEPTH_MAX} levels")
    if isinstance(value, str):
        _metadata_text(path, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument("metadata", "keys must be strings")
            # The key is named in the error, escaped: a lone surrogate cannot be encoded.
            named = f"{path}.{key[:64].encode('utf-8', 'backslashreplace').decode()}"
            _metadata_text(named, key)
            _check_metadata_value(item, named, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_metadata_value(item, f"{path}[{i}]", depth + 1)


def metadata(value: object) -> str:
    """A JSON object of at most METADATA_BYTES_MAX bytes serialized (UTF-8), as compact JSON;
    nested at most METADATA_DEPTH_MAX levels, with storable keys and strings."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise InvalidArgument("metadata", "must be a JSON object")
    _check_metadata_value(value, "", 1)
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("metadata", f"not serializable as JSON: {exc}") from exc
    if len(encoded.encode()) > bounds.METADATA_BYTES_MAX:
        raise InvalidArgument("metadata", f"larger than {bounds.METADATA_BYTES_MAX} bytes")
    return encoded


def expires_ms(value: Any, now_ms: int) -> int:
    """0 for never; else an integer ms timestamp after now."""
    if value is None:
        return 0
    ms = integer("expires_at", value, 1, bounds.CREDITS_MAX)
    if ms <= now_ms:
        raise InvalidArgument("expires_at", "must be in the future")
    return ms
