"""Issue 12 item 9: /openapi.json says what the server does (api/openapi_doc.py).

Before, it called the Idempotency-Key optional, listed no problem+json error, and admitted
10.0 and null where the server refuses them. tests/api/test_schemathesis.py runs every
schemathesis check against it; these tests read the document itself."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api.conftest import bearer

PROBLEM = "application/problem+json"
JSON = "application/json"
MONEY_POSTS = [
    "/v1/holds",
    "/v1/holds/{hold_id}/settle",
    "/v1/holds/{hold_id}/release",
    "/v1/refunds",
    "/v1/accounts/{account_id}/grants",
    "/v1/accounts/{account_id}/adjustments",
]


@pytest.fixture(scope="module")
def doc(api_url: str) -> dict[str, Any]:
    r = httpx.get(f"{api_url}/openapi.json", timeout=10)
    assert r.status_code == 200
    return r.json()


def _header(operation: dict[str, Any]) -> dict[str, Any]:
    (param,) = [
        p
        for p in operation["parameters"]
        if p["in"] == "header" and p["name"].lower() == "idempotency-key"
    ]
    return param


@pytest.mark.parametrize("path", MONEY_POSTS)
def test_idempotency_key_is_required_on_every_money_post(doc: dict[str, Any], path: str) -> None:
    param = _header(doc["paths"][path]["post"])
    assert param["required"] is True
    assert param["schema"]["type"] == "string" and "anyOf" not in param["schema"]
    assert param["schema"]["maxLength"] == 255


def test_a_charge_takes_the_key_optionally_for_its_dry_run(doc: dict[str, Any]) -> None:
    # A real charge without one is 400 (tests/api/test_charge_dry_run.py); a dry run needs none.
    op = doc["paths"]["/v1/charges"]["post"]
    assert _header(op)["required"] is False
    assert {"200", "201"} <= set(op["responses"])


def test_a_heartbeat_and_a_checkout_take_the_key_optionally(doc: dict[str, Any]) -> None:
    for path in ("/v1/holds/{hold_id}/extend", "/v1/checkout/sessions"):
        assert _header(doc["paths"][path]["post"])["required"] is False


def test_every_error_answer_is_a_documented_problem(doc: dict[str, Any]) -> None:
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {
        "type",
        "title",
        "status",
        "detail",
    }
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
            for status, response in errors.items():
                assert list(response["content"]) == [PROBLEM], (method, path, status)
                schema = response["content"][PROBLEM]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path)
    charge = doc["paths"]["/v1/charges"]["post"]["responses"]
    assert {"400", "401", "402", "403", "404", "409", "422", "429", "503"} <= set(charge)


def test_integers_are_integers_and_null_only_where_accepted(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.0.")  # its dialect: 10.0 is not an integer
    assert '"type": "null"' not in json.dumps(doc)
    schemas = doc["components"]["schemas"]
    for name, schema in schemas.items():
        if name != "MetadataValue":  # a metadata value may be any JSON number
            assert '"type": "number"' not in json.dumps(schema), name
    schemas = doc["components"]["schemas"]
    quantity = schemas["ChargeIn"]["properties"]["quantity"]
    assert quantity["type"] == "integer" and quantity["minimum"] == 1
    assert isinstance(quantity["maximum"], int) and not quantity.get("nullable")
    for name, field in schemas["ToolPatch"]["properties"].items():
        assert not field.get("nullable") and "default" not in field, name


def test_the_server_refuses_what_the_document_refuses(
    http: httpx.Client, admin_key: str, doc: dict[str, Any]
) -> None:
    """10.0 for an integer, null for a tool field: the document and the server agree."""
    r = http.patch("/v1/tools/NOPE", json={"cost": None}, headers=bearer(admin_key))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = http.post(
        "/v1/charges",
        content=b'{"account_id": "a", "tool": "T", "quantity": 96.0}',
        headers={
            **bearer(admin_key),
            "Idempotency-Key": "k-96",
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.quantity"
