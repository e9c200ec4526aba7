"""What the real Stripe API refuses before doing anything, for the loopback fake
(tests/stripe_fake.py): unknown parameters, missing required ones, wrong types and values
outside an enum, per endpoint, by the rules in tests/stripe_objects/requests.json (from the
parameter types stripe-python generates from Stripe's OpenAPI spec), and Stripe's metadata
limits. Errors carry Stripe's own wording, code and `param` (bracket notation).

The rules see form values as Stripe does: every scalar is a string; nested hashes and arrays
come from the bracket notation (tests.stripe_fake.parse_form).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

OBJECTS_DIR = Path(__file__).parent / "stripe_objects"
INTEGER_RE = re.compile(r"^-?[0-9]+$")
DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
METADATA_KEYS_MAX = 50  # Stripe: up to 50 keys per metadata hash
METADATA_KEY_LEN_MAX = 40  # Stripe: key names up to 40 characters
BOOLEANS = ("true", "false")


@dataclass(frozen=True)
class ParamError(Exception):
    """An invalid_request_error as Stripe writes it."""

    message: str
    param: str
    code: str | None = None
    status: int = 400  # 404 for the object a URL names


@cache
def rules() -> dict[str, Any]:
    return dict(json.loads((OBJECTS_DIR / "requests.json").read_text()))


def check(endpoint: str, params: dict[str, Any]) -> None:
    """Raises the first ParamError Stripe would answer for `params` sent to `endpoint`
    ("POST /v1/checkout/sessions", "GET /v1/customers/{id}")."""
    _value(rules()[endpoint], params, "")


def _name(parent: str, key: str | int) -> str:
    return f"{parent}[{key}]" if parent else str(key)


def _value(schema: dict[str, Any], value: Any, param: str) -> None:
    if "anyOf" in schema:
        errors: list[ParamError] = []
        for option in schema["anyOf"]:
            try:
                _value(option, value, param)
                return
            except ParamError as exc:
                errors.append(exc)
        # The error of the option of the value's own shape (a hash, or a scalar) says most.
        shaped = [e for o, e in zip(schema["anyOf"], errors, strict=True) if _shape_fits(o, value)]
        raise (shaped or errors)[0]
    kind = schema.get("type")
    if kind == "object":
        _object(schema, value, param)
    elif kind == "array":
        _array(schema, value, param)
    else:
        _scalar(schema, kind, value, param)


def _shape_fits(schema: dict[str, Any], value: Any) -> bool:
    return (schema.get("type") == "object") == isinstance(value, dict)


def _object(schema: dict[str, Any], value: Any, param: str) -> None:
    if value == "" and param:
        return  # an empty string unsets a hash (metadata="" clears it)
    if not isinstance(value, dict):
        raise ParamError(f"Invalid hash: {param} must be a hash, not {value!r}.", param)
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if extra is not None:
        _metadata(value, param)
        for key, item in value.items():
            _value(extra, item, _name(param, key))
        return
    if properties is None:
        return  # an object creditmeter never fills: its contents are not checked
    for key in value:
        if key not in properties:
            name = _name(param, key)
            raise ParamError(f"Received unknown parameter: {name}", name, "parameter_unknown")
    for key in schema.get("required", []):
        if key not in value:
            name = _name(param, key)
            raise ParamError(f"Missing required param: {name}.", name, "parameter_missing")
    for key, item in value.items():
        _value(properties[key], item, _name(param, key))


def _metadata(value: dict[str, Any], param: str) -> None:
    if len(value) > METADATA_KEYS_MAX:
        raise ParamError(
            f"Invalid {param}: metadata can have at most {METADATA_KEYS_MAX} keys.", param
        )
    for key, item in value.items():
        if len(key) > METADATA_KEY_LEN_MAX:
            raise ParamError(
                f"Metadata keys can have up to {METADATA_KEY_LEN_MAX} characters, but you"
                f" passed in a key that is {len(key)} characters.",
                _name(param, key),
            )
        if isinstance(item, str) and len(item) > 500:
            raise ParamError(
                "Metadata values can have up to 500 characters, but you passed in a value"
                f" that is {len(item)} characters.",
                _name(param, key),
            )


def _array(schema: dict[str, Any], value: Any, param: str) -> None:
    if value == "":
        return  # an empty string empties an array
    if not isinstance(value, list):
        raise ParamError(f"Invalid array: {param} must be an array.", param)
    for i, item in enumerate(value):
        _value(schema["items"], item, _name(param, i))


def _scalar(schema: dict[str, Any], kind: Any, value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise ParamError(f"Invalid {param}: must be a {kind}, not a hash or an array.", param)
    if kind == "integer" and not INTEGER_RE.fullmatch(value):
        raise ParamError(f"Invalid integer: {value}", param, "parameter_invalid_integer")
    if kind == "decimal" and not DECIMAL_RE.fullmatch(value):
        raise ParamError(f"Invalid decimal: {value}", param)
    if kind == "number" and not DECIMAL_RE.fullmatch(value):
        raise ParamError(f"Invalid float: {value}", param)
    if kind == "boolean" and value not in BOOLEANS:
        raise ParamError(f"Invalid boolean: {value}", param)
    enum = schema.get("enum")
    if enum and value not in enum:
        allowed = ", ".join(enum[:-1]) + f", or {enum[-1]}" if len(enum) > 1 else enum[0]
        raise ParamError(f"Invalid {param}: must be one of {allowed}", param)
