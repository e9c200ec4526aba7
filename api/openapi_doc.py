"""/openapi.json as the server behaves (issue 12 item 9): what FastAPI derives, corrected.

FastAPI's document leaves out what lives outside the models: the Idempotency-Key header is a
dependency that answers 400 itself when missing (so FastAPI declares it optional), errors are
problem+json from api/errors.py (FastAPI lists only its own 422 body), and pydantic writes
integer bounds as floats. This module rewrites the generated document once:

- Idempotency-Key: required on every POST whose route depends on `idempotency_key`, and
  described by its pattern (1-255 printable ASCII), never null;
- every error status a route can answer, each `application/problem+json` with the Problem
  schema (RFC 9457 members and the `errors` list of a validation failure);
- integer bounds written as integers, and no `default: null` on a field that refuses null;
- OpenAPI 3.0.3, whose schema dialect (like the server, SPEC §4) does not take 10.0 for an
  integer; null spelled `nullable`, and only where the server accepts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from api.errors import MEDIA_TYPE
from api.idempotency import idempotency_key, optional_idempotency_key
from api.schemas import METADATA_VALUE_REF, NO_NUL_PATTERN
from meter import validate

OPENAPI_VERSION = "3.0.3"
PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; extension members vary by `type`.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:creditmeter:problem:<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation failures: which field, and why",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
# A value inside metadata: any JSON, with no NUL in a string or a key (api/schemas.Metadata).
METADATA_VALUE_SCHEMA: dict[str, Any] = {
    "nullable": True,
    "anyOf": [
        {"type": "string", "pattern": NO_NUL_PATTERN},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "array", "items": {"$ref": METADATA_VALUE_REF}},
        {
            "type": "object",
            "patternProperties": {NO_NUL_PATTERN: {"$ref": METADATA_VALUE_REF}},
            "additionalProperties": False,
        },
    ],
}
IDEMPOTENCY_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": validate.IDEMPOTENCY_RE.pattern,
    "minLength": 1,
    "maxLength": 255,
}

STATUS_TEXT = {
    400: "Bad request: a missing Idempotency-Key, a body that cannot be parsed",
    401: "Missing, unknown or expired credentials",
    402: "Insufficient credits",
    403: "The key's scope does not allow this, the tool is switched off or the account is "
    "suspended",
    404: "No such tool, hold, charge, account or catalog entry",
    409: "Conflict: the hold is no longer active, a refund above the charge, a limit",
    422: "Invalid request, or an Idempotency-Key reused with another request",
    429: "Too many failed authentications from this client, or a charge over its tool's "
    "rate limit (see Retry-After)",
    502: "Stripe could not be reached",
    503: "The balance store or the database is unavailable (see Retry-After when sent)",
}

# Domain answers of the routes that change money (api/errors.from_meter_error).
DOMAIN_STATUSES: dict[tuple[str, str], frozenset[int]] = {
    ("POST", "/v1/charges"): frozenset({402, 403, 404, 409}),
    ("POST", "/v1/holds"): frozenset({402, 403, 404, 409}),
    ("POST", "/v1/holds/{hold_id}/settle"): frozenset({402, 404, 409}),
    ("POST", "/v1/holds/{hold_id}/release"): frozenset({404, 409}),
    ("POST", "/v1/holds/{hold_id}/extend"): frozenset({404, 409}),
    ("POST", "/v1/refunds"): frozenset({404, 409}),
    ("POST", "/v1/accounts/{account_id}/grants"): frozenset({409}),
    ("POST", "/v1/accounts/{account_id}/adjustments"): frozenset({402, 409}),
    ("POST", "/v1/checkout/sessions"): frozenset({404, 502}),
    ("POST", "/v1/webhooks/stripe"): frozenset({400}),
}
UNSTORED_ROUTES = frozenset({"/healthz"})  # answers without Redis or SQL: never 503


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dep in dependant.dependencies:
        yield dep.call
        yield from _calls(dep)


def _statuses(path: str, calls: set[Any], method: str, operation: dict[str, Any]) -> set[int]:
    out: set[int] = set(DOMAIN_STATUSES.get((method, path), ()))
    if operation.get("security"):
        out |= {401, 403, 429}
    if operation.get("parameters") or operation.get("requestBody"):
        out.add(422)
    if operation.get("requestBody"):
        out.add(400)  # JSON that cannot be parsed at all (e.g. nested beyond the parser)
    if idempotency_key in calls:
        out |= {400, 422}
    if "{" in path:
        out.add(404)
    if path not in UNSTORED_ROUTES:
        out.add(503)
    return out


def _nullable(node: dict[str, Any]) -> None:
    """OpenAPI 3.0 spells `anyOf: [X, {type: null}]` as X with `nullable: true`."""
    members = node.get("anyOf")
    if not isinstance(members, list) or {"type": "null"} not in members:
        return
    others = [m for m in members if m != {"type": "null"}]
    del node["anyOf"]
    node["nullable"] = True
    if len(others) != 1:
        node["anyOf"] = others
    elif "$ref" in others[0]:
        node["allOf"] = others
    else:
        node.update({k: v for k, v in others[0].items() if k not in node})


def _tidy(node: Any) -> None:
    """pydantic writes `ge=1` on an int as 1.0, `default: null` on a field that is only
    optional to leave out (ToolPatch), and null in OpenAPI 3.1's way: integer bounds as
    integers, no null a value refuses, and `nullable` where null is accepted."""
    if isinstance(node, dict):
        _nullable(node)
        if "default" in node and node["default"] is None and not node.get("nullable"):
            del node["default"]
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(bound)
                if isinstance(value, float) and value.is_integer():
                    node[bound] = int(value)
        for child in node.values():
            _tidy(child)
    elif isinstance(node, list):
        for child in node:
            _tidy(child)


def _fix_idempotency_header(operation: dict[str, Any], required: bool) -> None:
    for param in operation.get("parameters", []):
        if param["in"] == "header" and param["name"].lower() == "idempotency-key":
            param["name"] = "Idempotency-Key"
            param["required"] = required
            param["schema"] = {**IDEMPOTENCY_KEY_SCHEMA, "title": "Idempotency-Key"}


def _problem_responses(operation: dict[str, Any], statuses: set[int]) -> None:
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": STATUS_TEXT[status],
            "content": {MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
        }


def build(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["MetadataValue"] = METADATA_VALUE_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's; never answered
        schemas.pop(name, None)
    # Routes of included routers come wrapped: iterate as get_openapi does.
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not context.include_in_schema:
            continue
        path = context.path_format or route.path_format
        calls = set(_calls(route.dependant))
        for method in route.methods or ():
            operation = doc["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            if idempotency_key in calls or optional_idempotency_key in calls:
                _fix_idempotency_header(operation, required=idempotency_key in calls)
            _problem_responses(operation, _statuses(path, calls, method, operation))
    _tidy(doc)
    # OpenAPI 3.0: its JSON Schema dialect (draft 4) reads 10.0 as a number, not an integer,
    # which is how the server reads it (SPEC §4); 3.1's dialect would call 10.0 an integer.
    doc["openapi"] = OPENAPI_VERSION
    return doc


def install(app: FastAPI) -> None:
    """Serves the corrected document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
