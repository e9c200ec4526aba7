"""Every route and status code of SPEC §7 (except purchases and reports), over real HTTP to
a running `creditmeter api` on real Redis and SQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sync.models import T_AUDIT
from tests.api.conftest import account, bearer, charge, idem, wallet

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["type"] and body["title"] and "detail" in body
    return body


# --- tools ---------------------------------------------------------------------------


def test_put_tool_then_get_and_list(http: httpx.Client, admin_key: str, read_key: str, tool: str):
    one = http.get(f"/v1/tools/{tool}", headers=bearer(read_key))
    assert one.status_code == 200
    assert one.json() == {
        "name": tool,
        "display_name": "Image",
        "description": "",
        "cost": 10,
        "credit_type": "credits",
        "active": True,
        "rate_limit": "",
    }
    listed = http.get("/v1/tools", headers=bearer(read_key)).json()["data"]
    assert tool in [t["name"] for t in listed]


def test_put_tool_rejects_bad_body_422(http: httpx.Client, admin_key: str):
    r = http.put(
        "/v1/tools/BAD_TOOL",
        json={"display_name": "x", "cost": "10", "credit_type": "credits", "active": True},
        headers=bearer(admin_key),
    )
    body = assert_problem(r, 422)
    assert any(e["field"].endswith("cost") for e in body["errors"])


def test_patch_tool_changes_next_charge_and_404_for_unknown(
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    funded: Callable[[int], str],
    api_prefix: str,
):
    name = f"PATCHED_{api_prefix.upper()}"
    put = {"display_name": "P", "cost": 5, "credit_type": "credits", "active": True}
    assert http.put(f"/v1/tools/{name}", json=put, headers=bearer(admin_key)).status_code == 200
    r = http.patch(f"/v1/tools/{name}", json={"cost": 7}, headers=bearer(admin_key))
    assert r.status_code == 200 and r.json()["cost"] == 7
    acct = funded(100)
    assert charge(http, meter_key, acct, name).json()["amount"] == 7
    off = http.patch(f"/v1/tools/{name}", json={"active": False}, headers=bearer(admin_key))
    assert off.json()["active"] is False
    assert_problem(charge(http, meter_key, acct, name), 403)
    assert_problem(
        http.patch("/v1/tools/NO_SUCH_TOOL_X", json={"cost": 1}, headers=bearer(admin_key)), 404
    )
    assert_problem(http.get("/v1/tools/NO_SUCH_TOOL_X", headers=bearer(admin_key)), 404)


# --- charges ---------------------------------------------------------------------------


def test_charge_201_with_balance(http: httpx.Client, meter_key: str, funded, tool: str):
    acct = funded(100)
    r = charge(http, meter_key, acct, tool, quantity=2, description="two images")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["account_id"] == acct and body["tool"] == tool
    assert body["credit_type"] == "credits" and body["amount"] == 20 and body["balance"] == 80
    assert body["id"]
    assert "Idempotent-Replayed" not in r.headers


def test_charge_402_names_balance_required_credit_type(
    http: httpx.Client, meter_key: str, funded, tool: str
):
    acct = funded(15)
    body = assert_problem(charge(http, meter_key, acct, tool, quantity=2), 402)
    assert body["balance"] == 15 and body["required"] == 20 and body["credit_type"] == "credits"


def test_charge_unknown_tool_404(http: httpx.Client, meter_key: str, funded):
    assert_problem(charge(http, meter_key, funded(10), "NOPE_NOT_A_TOOL"), 404)


def test_new_account_is_created_on_first_touch_not_404(
    http: httpx.Client, meter_key: str, tool: str
):
    # No credits: the account exists (402 carries its balance), it is not "not found".
    body = assert_problem(charge(http, meter_key, account("fresh"), tool), 402)
    assert body["balance"] >= 0


@pytest.mark.parametrize("bad", ["10", 10.5, 10.0, True, 1e3, 2**53, -1, 0, None])
def test_charge_strict_quantity_422(
    http: httpx.Client, meter_key: str, funded, tool: str, bad: Any
):
    acct = funded(10)
    body = assert_problem(charge(http, meter_key, acct, tool, quantity=bad), 422)
    assert any("quantity" in e["field"] for e in body["errors"])


def test_charge_unknown_field_422(http: httpx.Client, meter_key: str, funded, tool: str):
    body = assert_problem(charge(http, meter_key, funded(10), tool, amount=1), 422)
    assert any(e["field"].endswith("amount") for e in body["errors"])


def test_charge_malformed_json_422(http: httpx.Client, meter_key: str):
    r = http.post(
        "/v1/charges",
        content=b'{"account_id": ',
        headers={**bearer(meter_key), **idem(), "Content-Type": "application/json"},
    )
    assert_problem(r, 422)


# --- idempotency -----------------------------------------------------------------------


def test_missing_idempotency_key_400(http: httpx.Client, meter_key: str, funded, tool: str):
    assert_problem(charge(http, meter_key, funded(10), tool, headers={}), 400)


def test_replay_returns_stored_answer_with_header(
    http: httpx.Client, meter_key: str, funded, tool: str
):
    acct = funded(100)
    key = idem()
    first = charge(http, meter_key, acct, tool, headers=key)
    again = charge(http, meter_key, acct, tool, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    bal = http.get(f"/v1/accounts/{acct}/balance", headers=bearer(meter_key)).json()
    assert wallet(bal)["balance"] == 90  # charged once


def test_same_key_other_body_422(http: httpx.Client, meter_key: str, funded, tool: str):
    acct = funded(100)
    key = idem()
    assert charge(http, meter_key, acct, tool, headers=key).status_code == 201
    assert_problem(charge(http, meter_key, acct, tool, quantity=2, headers=key), 422)
    # another account with the same key is another body too
    assert_problem(charge(http, meter_key, funded(100), tool, headers=key), 422)


def test_replayed_402_is_the_stored_answer(
    http: httpx.Client, admin_key: str, meter_key: str, funded, tool: str
):
    acct = funded(5)
    key = idem()
    first = assert_problem(charge(http, meter_key, acct, tool, headers=key), 402)
    http.post(
        f"/v1/accounts/{acct}/grants",
        json={"credit_type": "credits", "amount": 100, "category": "paid"},
        headers={**bearer(admin_key), **idem()},
    )
    again = charge(http, meter_key, acct, tool, headers=key)
    assert again.status_code == 402 and again.json() == first
    assert again.headers["Idempotent-Replayed"] == "true"


# --- holds -----------------------------------------------------------------------------


def test_hold_settle_release_extend(http: httpx.Client, meter_key: str, funded, tool: str):
    acct = funded(100)
    h = http.post(
        "/v1/holds",
        json={"account_id": acct, "tool": tool, "amount": 50, "ttl_seconds": 60},
        headers={**bearer(meter_key), **idem()},
    )
    assert h.status_code == 201, h.text
    hold = h.json()
    assert hold["amount"] == 50 and hold["credit_type"] == "credits" and hold["balance"] == 100
    assert hold["expires_at"].endswith("Z")
    ext = http.post(
        f"/v1/holds/{hold['id']}/extend", json={"ttl_seconds": 600}, headers=bearer(meter_key)
    )
    assert ext.status_code == 200 and ext.json()["expires_at"] > hold["expires_at"]
    s = http.post(
        f"/v1/holds/{hold['id']}/settle",
        json={"amount": 30},
        headers={**bearer(meter_key), **idem()},
    )
    assert s.status_code == 200, s.text
    assert s.json()["charged"] == 30 and s.json()["released"] == 20 and s.json()["balance"] == 70
    assert s.json()["entry_id"]
    # settled: every further transition is 409
    assert_problem(
        http.post(f"/v1/holds/{hold['id']}/release", headers={**bearer(meter_key), **idem()}), 409
    )
    assert_problem(
        http.post(
            f"/v1/holds/{hold['id']}/settle", json={}, headers={**bearer(meter_key), **idem()}
        ),
        409,
    )
    assert_problem(
        http.post(
            f"/v1/holds/{hold['id']}/extend", json={"ttl_seconds": 5}, headers=bearer(meter_key)
        ),
        409,
    )


def test_hold_by_quantity_then_release(http: httpx.Client, meter_key: str, funded, tool: str):
    acct = funded(100)
    hold = http.post(
        "/v1/holds",
        json={"account_id": acct, "tool": tool, "quantity": 3},
        headers={**bearer(meter_key), **idem()},
    ).json()
    assert hold["amount"] == 30
    r = http.post(f"/v1/holds/{hold['id']}/release", headers={**bearer(meter_key), **idem()})
    assert r.status_code == 200 and r.json()["released"] == 30 and r.json()["balance"] == 100


def test_hold_402_403_404(
    http: httpx.Client, admin_key: str, meter_key: str, funded, api_prefix: str, tool: str
):
    acct = funded(10)
    h = {**bearer(meter_key)}
    assert_problem(
        http.post(
            "/v1/holds",
            json={"account_id": acct, "tool": tool, "amount": 11},
            headers={**h, **idem()},
        ),
        402,
    )
    assert_problem(
        http.post(
            "/v1/holds", json={"account_id": acct, "tool": "NOT_THERE_Q"}, headers={**h, **idem()}
        ),
        404,
    )
    off = f"OFF_{api_prefix.upper()}"
    http.put(
        f"/v1/tools/{off}",
        json={"display_name": "o", "cost": 1, "credit_type": "credits", "active": False},
        headers=bearer(admin_key),
    )
    assert_problem(
        http.post("/v1/holds", json={"account_id": acct, "tool": off}, headers={**h, **idem()}), 403
    )
    assert_problem(
        http.post(
            "/v1/holds",
            json={"account_id": acct, "tool": tool, "quantity": 1, "amount": 5},
            headers={**h, **idem()},
        ),
        422,
    )


def test_settle_over_the_hold_not_covered_402_and_hold_stays(
    http: httpx.Client, meter_key: str, funded, tool: str
):
    acct = funded(40)
    hold = http.post(
        "/v1/holds",
        json={"account_id": acct, "tool": tool, "amount": 30},
        headers={**bearer(meter_key), **idem()},
    ).json()
    body = assert_problem(
        http.post(
            f"/v1/holds/{hold['id']}/settle",
            json={"amount": 50},
            headers={**bearer(meter_key), **idem()},
        ),
        402,
    )
    assert body["credit_type"] == "credits"
    ok = http.post(
        f"/v1/holds/{hold['id']}/settle",
        json={"amount": 40},
        headers={**bearer(meter_key), **idem()},
    )
    assert ok.status_code == 200 and ok.json()["balance"] == 0


def test_unknown_hold_404(http: httpx.Client, meter_key: str):
    assert_problem(
        http.post(f"/v1/holds/{uuid.uuid4()}/release", headers={**bearer(meter_key), **idem()}), 404
    )


# --- refunds ---------------------------------------------------------------------------


def test_refund_partial_then_rest_then_409(http: httpx.Client, meter_key: str, funded, tool: str):
    acct = funded(100)
    c = charge(http, meter_key, acct, tool, quantity=3).json()
    r1 = http.post(
        "/v1/refunds",
        json={"charge_id": c["id"], "amount": 10, "reason": "bad"},
        headers={**bearer(meter_key), **idem()},
    )
    assert r1.status_code == 201 and r1.json()["amount"] == 10 and r1.json()["balance"] == 80
    r2 = http.post(
        "/v1/refunds", json={"charge_id": c["id"]}, headers={**bearer(meter_key), **idem()}
    )
    assert r2.status_code == 201 and r2.json()["amount"] == 20 and r2.json()["balance"] == 100
    assert_problem(
        http.post(
            "/v1/refunds",
            json={"charge_id": c["id"], "amount": 1},
            headers={**bearer(meter_key), **idem()},
        ),
        409,
    )
    assert_problem(
        http.post(
            "/v1/refunds",
            json={"charge_id": str(uuid.uuid4())},
            headers={**bearer(meter_key), **idem()},
        ),
        404,
    )


# --- grants and adjustments -------------------------------------------------------------


def test_grant_and_adjustment(http: httpx.Client, admin_key: str, read_key: str, api_engine):
    acct = account()
    g = http.post(
        f"/v1/accounts/{acct}/grants",
        json={
            "credit_type": "credits",
            "amount": 50,
            "category": "promotional",
            "priority": 10,
            "expires_at": "2099-01-01T00:00:00Z",
            "reason": "welcome back",
            "reference_id": "ticket-1",
        },
        headers={**bearer(admin_key), **idem()},
    )
    assert g.status_code == 201, g.text
    assert g.json()["id"] and g.json()["balance"] >= 50
    start = g.json()["balance"]
    a = http.post(
        f"/v1/accounts/{acct}/adjustments",
        json={"credit_type": "credits", "amount": -20, "reason": "support ticket 9"},
        headers={**bearer(admin_key), **idem()},
    )
    assert a.status_code == 201 and a.json()["balance"] == start - 20
    bal = http.get(f"/v1/accounts/{acct}/balance", headers=bearer(read_key)).json()
    wallet = next(b for b in bal["balances"] if b["credit_type"] == "credits")
    assert wallet == {
        "credit_type": "credits",
        "available": start - 20,
        "held": 0,
        "balance": start - 20,
    }
    grant = next(x for x in bal["grants"] if x["id"] == g.json()["grant_id"])
    assert grant["expires_at"] == "2099-01-01T00:00:00Z" and grant["category"] == "promotional"
    with api_engine.connect() as conn:
        rows = conn.execute(select(T_AUDIT).where(T_AUDIT.c.target == acct)).mappings().all()
    assert sorted(r["action"] for r in rows) == ["account.adjust", "account.grant"]
    assert all(r["actor"] and admin_key not in r["actor"] for r in rows)
    assert "support ticket 9" in next(r["detail"] for r in rows if r["action"] == "account.adjust")


@pytest.mark.parametrize(
    "body",
    [
        {"credit_type": "credits", "amount": 0, "reason": "x"},
        {"credit_type": "credits", "amount": 5},
        {"credit_type": "credits", "amount": 5, "reason": ""},
        {"credit_type": "Credits", "amount": 5, "reason": "x"},
        {"credit_type": "credits", "amount": 5.0, "reason": "x"},
    ],
)
def test_adjustment_422(http: httpx.Client, admin_key: str, body: dict[str, Any]):
    assert_problem(
        http.post(
            f"/v1/accounts/{account()}/adjustments",
            json=body,
            headers={**bearer(admin_key), **idem()},
        ),
        422,
    )


@pytest.mark.parametrize(
    "body",
    [
        {"credit_type": "credits", "amount": 5, "category": "gift"},
        {
            "credit_type": "credits",
            "amount": 5,
            "category": "paid",
            "expires_at": "2001-01-01T00:00:00Z",
        },
        {"credit_type": "credits", "amount": 5, "category": "paid", "expires_at": "tomorrow"},
        {"credit_type": "credits", "amount": 5, "category": "paid", "priority": 101},
        {"credit_type": "credits", "amount": 2**53, "category": "paid"},
    ],
)
def test_grant_422(http: httpx.Client, admin_key: str, body: dict[str, Any]):
    assert_problem(
        http.post(
            f"/v1/accounts/{account()}/grants", json=body, headers={**bearer(admin_key), **idem()}
        ),
        422,
    )


# --- entries ---------------------------------------------------------------------------


def test_entries_from_sql_paginated(
    http: httpx.Client, meter_key: str, read_key: str, funded, tool: str, api_env
):
    import subprocess

    from tests.api.server import creditmeter_bin

    acct = funded(100)
    for _ in range(5):
        assert charge(http, meter_key, acct, tool).status_code == 201
    subprocess.run(
        [creditmeter_bin(), "worker", "--burst"], env=api_env, check=True, capture_output=True
    )
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get(f"/v1/accounts/{acct}/entries", params=params, headers=bearer(read_key))
        assert page.status_code == 200, page.text
        seen += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    kinds = [e["kind"] for e in seen]
    assert kinds.count("charge") == 5 and "grant" in kinds
    assert all(e["amount"] == -10 for e in seen if e["kind"] == "charge")
    assert [e["created_at"] for e in seen] == sorted((e["created_at"] for e in seen), reverse=True)
    assert len({e["id"] for e in seen}) == len(seen)
    assert_problem(
        http.get(
            f"/v1/accounts/{acct}/entries", params={"cursor": "garbage!"}, headers=bearer(read_key)
        ),
        422,
    )
    assert_problem(
        http.get(f"/v1/accounts/{acct}/entries", params={"limit": 0}, headers=bearer(read_key)), 422
    )


# --- auth ------------------------------------------------------------------------------


def test_missing_or_invalid_key_401(http: httpx.Client, tool: str):
    assert_problem(http.get("/v1/tools"), 401)
    assert_problem(http.get("/v1/tools", headers=bearer("cm_not_a_real_key")), 401)


def test_wrong_scope_403(http: httpx.Client, read_key: str, meter_key: str, tool: str):
    assert_problem(charge(http, read_key, account(), tool), 403)
    assert_problem(
        http.put(
            "/v1/tools/X_Y",
            json={"display_name": "x", "cost": 1, "credit_type": "credits"},
            headers=bearer(meter_key),
        ),
        403,
    )
    assert_problem(http.get("/v1/status/sync", headers=bearer(meter_key)), 403)


def test_account_token_reads_own_balance_only(http: httpx.Client, meter_key: str, funded):
    a, b = funded(10), funded(20)
    t = http.post(f"/v1/accounts/{a}/tokens", json={"ttl_seconds": 60}, headers=bearer(meter_key))
    assert t.status_code == 201, t.text
    token = t.json()["token"]
    assert t.json()["expires_at"].endswith("Z")
    own = http.get(f"/v1/accounts/{a}/balance", headers=bearer(token))
    assert own.status_code == 200 and wallet(own.json())["balance"] == 10
    assert http.get(f"/v1/accounts/{a}/balance", params={"token": token}).status_code == 200
    assert_problem(http.get(f"/v1/accounts/{b}/balance", headers=bearer(token)), 403)
    assert_problem(http.get(f"/v1/accounts/{a}/entries", headers=bearer(token)), 403)
    assert_problem(
        http.post(
            "/v1/charges", json={"account_id": a, "tool": "X"}, headers={**bearer(token), **idem()}
        ),
        403,
    )


# --- service ---------------------------------------------------------------------------


def test_health_ready_status_metrics(http: httpx.Client, admin_key: str):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    checks = ready.json()["checks"]  # and more checks as the service grows
    assert ready.status_code == 200 and (checks["redis"], checks["sql"]) == ("ok", "ok")
    status = http.get("/v1/status/sync", headers=bearer(admin_key))
    assert status.status_code == 200
    assert len(status.json()["buckets"]) == 4
    assert "creditmeter_charges_total" in http.get("/metrics").text


def test_unknown_route_and_method_are_problems(http: httpx.Client):
    assert_problem(http.get("/v1/nothing-here"), 404)
    assert_problem(http.delete("/v1/charges"), 405)


def test_openapi_lists_the_routes(http: httpx.Client):
    paths = http.get("/openapi.json").json()["paths"]
    for p in (
        "/v1/tools",
        "/v1/tools/{name}",
        "/v1/charges",
        "/v1/holds",
        "/v1/holds/{hold_id}/settle",
        "/v1/holds/{hold_id}/release",
        "/v1/holds/{hold_id}/extend",
        "/v1/refunds",
        "/v1/accounts/{account_id}/grants",
        "/v1/accounts/{account_id}/adjustments",
        "/v1/accounts/{account_id}/balance",
        "/v1/accounts/{account_id}/entries",
        "/v1/accounts/{account_id}/tokens",
        "/v1/accounts/{account_id}/events",
        "/v1/status/sync",
        "/healthz",
        "/readyz",
    ):
        assert p in paths, p


def test_keys_never_stored_or_logged_in_plain_text(
    http: httpx.Client, admin_key: str, meter_key: str, read_key: str, api_engine, api_data_dir
):
    # Failures and successes with every key, so each has been through auth and logging.
    for key in (admin_key, meter_key, read_key):
        http.get("/v1/status/sync", headers=bearer(key))
        http.get("/v1/tools", headers=bearer(key + "x"))
    with api_engine.connect() as conn:
        dump = " ".join(
            str(tuple(row))
            for table in ("api_keys", "audit_log")
            for row in conn.exec_driver_sql(f"SELECT * FROM {table}")
        )
    log = (api_data_dir / "api.log").read_text()
    for key in (admin_key, meter_key, read_key):
        secret_part = key[len("cm_live_") :]
        assert secret_part not in dump
        assert secret_part not in log


# --- issue 12 item 9: bad input is a 4xx, never a 500; a refused request frees its key --------


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        node = {"a": node}
    return node


BAD_METADATA = {
    "surrogate-value": '{"k": "\\ud800"}',
    "surrogate-key": '{"\\udfff": 1}',
    "nested-256": json.dumps(_deep(256)),
    "nested-900": json.dumps(_deep(900)),
}


@pytest.mark.parametrize("metadata", BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_bad_metadata_is_422_on_every_money_route(
    http: httpx.Client, admin_key: str, funded, tool: str, metadata: str
) -> None:
    acct = funded(1_000)
    auth = bearer(admin_key)
    c = charge(http, admin_key, acct, tool)
    hold = http.post(
        "/v1/holds", json={"account_id": acct, "tool": tool}, headers={**auth, **idem()}
    ).json()["id"]
    routes = {
        "/v1/charges": f'{{"account_id": "{acct}", "tool": "{tool}", "metadata": {metadata}}}',
        f"/v1/holds/{hold}/settle": f'{{"metadata": {metadata}}}',
        "/v1/refunds": f'{{"charge_id": "{c.json()["id"]}", "metadata": {metadata}}}',
        f"/v1/accounts/{acct}/grants": '{"credit_type": "credits", "amount": 1, '
        f'"category": "paid", "metadata": {metadata}}}',
        f"/v1/accounts/{acct}/adjustments": '{"credit_type": "credits", "amount": 1, '
        f'"reason": "r", "metadata": {metadata}}}',
    }
    before = wallet(http.get(f"/v1/accounts/{acct}/balance", headers=auth).json())
    for path, body in routes.items():
        r = http.post(
            path,
            content=body.encode(),
            headers={**auth, **idem(), "Content-Type": "application/json"},
        )
        problem = assert_problem(r, 422)
        assert [e["field"] for e in problem["errors"]] == ["body.metadata"], (path, problem)
    assert wallet(http.get(f"/v1/accounts/{acct}/balance", headers=auth).json()) == before


def test_an_unknown_field_named_with_a_lone_surrogate_is_422(
    http: httpx.Client, meter_key: str, funded, tool: str
) -> None:
    body = f'{{"account_id": "{funded(10)}", "tool": "{tool}", "\\ud800": 1}}'
    r = http.post(
        "/v1/charges",
        content=body.encode(),
        headers={**bearer(meter_key), **idem(), "Content-Type": "application/json"},
    )
    assert_problem(r, 422)


def test_a_request_the_meter_refuses_with_422_does_not_use_up_its_key(
    http: httpx.Client, admin_key: str, api_prefix: str
) -> None:
    """The body passes the schema and the key is claimed, then the meter refuses it (cost x
    quantity above CREDITS_MAX): 422, and the corrected request with the same key runs."""
    costly = f"COSTLY_{api_prefix.upper()}"
    cost = 10**7  # x 10**9 (QUANTITY_MAX) = 10**16 > 2**53 - 1
    r = http.put(
        f"/v1/tools/{costly}",
        json={"display_name": "Costly", "cost": cost, "credit_type": "credits"},
        headers=bearer(admin_key),
    )
    assert r.status_code == 200, r.text
    acct = account()
    grant = {"credit_type": "credits", "amount": cost, "category": "paid"}
    r = http.post(
        f"/v1/accounts/{acct}/grants", json=grant, headers={**bearer(admin_key), **idem()}
    )
    assert r.status_code == 201, r.text
    key = idem()
    refused = charge(http, admin_key, acct, costly, quantity=10**9, headers=key)
    assert assert_problem(refused, 422)["type"].endswith(":amount-overflow")
    fixed = charge(http, admin_key, acct, costly, quantity=1, headers=key)
    assert fixed.status_code == 201, fixed.text
    replay = charge(http, admin_key, acct, costly, quantity=1, headers=key)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == fixed.json()["id"]
