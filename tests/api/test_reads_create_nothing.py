"""A read never creates an account (issue 12): before, a `read` key reading an unseen
account's balance created it with its welcome grant, so liability grew from reads."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine, select

from sync.models import T_ACCOUNTS, T_GRANTS
from tests.api.conftest import account, bearer


def test_reading_an_unseen_account_answers_empty_wallets_and_creates_nothing(
    http: httpx.Client, read_key: str, api_engine: Engine
) -> None:
    a = account("unseen")
    r = http.get(f"/v1/accounts/{a}/balance", headers=bearer(read_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["account_id"] == a and body["grants"] == []
    assert all(b["balance"] == b["available"] == b["held"] == 0 for b in body["balances"])
    with api_engine.connect() as conn:
        assert conn.execute(select(T_ACCOUNTS.c.id).where(T_ACCOUNTS.c.id == a)).first() is None
        assert conn.execute(select(T_GRANTS.c.id).where(T_GRANTS.c.account_id == a)).first() is None
