"""SPEC §11.1 over HTTP: 200 concurrent charges on a balance of 10, spread across three API
processes, give exactly 10 x 201 and 190 x 402, and SQL ends with exactly 10 charges."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from sync.models import T_LEDGER
from tests.api.conftest import account, bearer, wallet
from tests.api.server import creditmeter_bin, running_api

API_PROCESSES = 3
CHARGES = 200
BALANCE = 10


@pytest.mark.slow
@pytest.mark.timeout(600)  # three API processes start; slow on a loaded 2-core machine
async def test_200_concurrent_charges_on_10_credits_across_3_processes(
    api_env: dict[str, str],
    api_data_dir: Path,
    admin_key: str,
    meter_key: str,
    api_prefix: str,
    api_engine: Engine,
) -> None:
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(running_api(api_env, log_path=api_data_dir / f"api{i}.log"))
            for i in range(API_PROCESSES)
        ]
        tool = f"ONE_{api_prefix.upper()}"
        acct = account("race")
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.put(
                f"{urls[0]}/v1/tools/{tool}",
                json={"display_name": "one", "cost": 1, "credit_type": "credits"},
                headers=bearer(admin_key),
            )
            assert r.status_code == 200, r.text
            r = await http.post(
                f"{urls[1]}/v1/accounts/{acct}/grants",
                json={"credit_type": "credits", "amount": BALANCE, "category": "paid"},
                headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 201, r.text
            # The welcome grant of the catalog may add credits: take the starting balance.
            start = wallet(
                (
                    await http.get(
                        f"{urls[2]}/v1/accounts/{acct}/balance", headers=bearer(meter_key)
                    )
                ).json()
            )["balance"]
            assert start == BALANCE

            async def one(i: int) -> int:
                resp = await http.post(
                    f"{urls[i % API_PROCESSES]}/v1/charges",
                    json={"account_id": acct, "tool": tool},
                    headers={**bearer(meter_key), "Idempotency-Key": f"race-{acct}-{i}"},
                )
                return resp.status_code

            statuses = Counter(await asyncio.gather(*(one(i) for i in range(CHARGES))))
            assert statuses == {201: BALANCE, 402: CHARGES - BALANCE}
            final = (
                await http.get(f"{urls[0]}/v1/accounts/{acct}/balance", headers=bearer(meter_key))
            ).json()
            assert wallet(final) == {
                "credit_type": "credits",
                "available": 0,
                "held": 0,
                "balance": 0,
            }
    subprocess.run([creditmeter_bin(), "worker", "--burst"], env=api_env, check=True)
    with api_engine.connect() as conn:
        charged = conn.execute(
            select(func.count(), func.sum(T_LEDGER.c.amount)).where(
                T_LEDGER.c.account_id == acct, T_LEDGER.c.kind == "charge"
            )
        ).one()
    assert tuple(charged) == (BALANCE, -BALANCE)
