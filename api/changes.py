"""Admin changes shared by the JSON API and the dashboard: each one writes, makes the change
visible where it must be (Redis replicas, the SQL ledger) and lands in the audit log with the
key that made it."""

from __future__ import annotations

from functools import partial
from typing import Any, Final

import anyio
from starlette.concurrency import run_in_threadpool

from api.schemas import AdjustmentIn
from api.state import AppState, queue_redis
from meter.models import AdjustResult, Tool
from sync import accounts, audit, entries, thresholds, tools
from sync.catalog import save_tools
from sync.queues import request_flush

LEDGER_WAIT_S: Final = 2.0  # an admin waits this long at most for their ledger row
LEDGER_POLL_S: Final = 0.05  # one indexed lookup by primary key per poll


async def write_tool_replicas(state: AppState) -> None:
    """Every replica gets every SQL tool: a replica lost with Redis is rebuilt whole, never
    left holding only the tool that just changed."""
    await state.meter.set_tools(await run_in_threadpool(tools.list_tools, state.engine))


async def put_tool(state: AppState, actor: str, tool: Tool, detail: dict[str, Any]) -> None:
    await run_in_threadpool(save_tools, state.engine, [tool])
    await write_tool_replicas(state)
    await run_in_threadpool(audit.record, state.engine, actor, "tool.put", tool.name, detail)


async def patch_tool(
    state: AppState, actor: str, name: str, changes: dict[str, Any]
) -> Tool | None:
    """The tool with `changes` saved and in force for the next charge; None if unknown."""
    tool = await run_in_threadpool(tools.patch_tool, state.engine, name, changes)
    if tool is None:
        return None
    await write_tool_replicas(state)
    await run_in_threadpool(audit.record, state.engine, actor, "tool.patch", name, changes)
    return tool


async def audit_entry(
    state: AppState, actor: str, action: str, account_id: str, entry_id: str, detail: dict[str, Any]
) -> None:
    """An admin's balance change in the audit log: what was asked and the entry it made."""
    record = {"entry_id": entry_id, **detail}
    await run_in_threadpool(audit.record, state.engine, actor, action, account_id, record)


async def adjust(
    state: AppState, actor: str, account_id: str, body: AdjustmentIn, idempotency_key: str | None
) -> AdjustResult:
    """An admin's signed balance change with its reason, audited once (not on a replay)."""
    r: AdjustResult = await state.meter.adjust(
        account_id,
        body.credit_type,
        body.amount,
        reason=body.reason,
        idempotency_key=idempotency_key,
        metadata=body.metadata,
    )
    if not r.replayed:
        detail = body.model_dump(exclude_none=True)
        await audit_entry(state, actor, "account.adjust", account_id, r.id, detail)
    return r


async def patch_account(
    state: AppState, actor: str, account_id: str, changes: dict[str, Any]
) -> accounts.AccountSettings | None:
    """The account's settings saved in SQL with their audit row, then in force on every
    wallet Redis has (accounts.put_in_force); None for an unknown account, which is not
    created."""
    low = changes.pop("low_balance_thresholds", None)
    saved = await run_in_threadpool(
        accounts.update_settings, state.engine, actor, account_id, changes
    )
    if saved is None:
        return None
    if low:
        await set_thresholds(state, actor, account_id, "low", low)

    def write(s: accounts.AccountSettings) -> int:
        # put_in_force runs in a worker thread; the async meter runs on the event loop.
        return anyio.from_thread.run(partial(state.meter.set_account, s.id, **s.in_redis))

    return await run_in_threadpool(accounts.put_in_force, state.engine, saved, write)


async def set_thresholds(
    state: AppState, actor: str, account_id: str, kind: str, given: dict[str, int | None]
) -> None:
    """Wallet thresholds (credit type -> threshold, None removes) saved in SQL with their
    audit rows, then in force in Redis (sync/in_force)."""
    await run_in_threadpool(
        thresholds.save_thresholds, state.engine, actor, account_id, kind, given
    )

    def write(credit_type: str, threshold: int | None) -> bool:
        # apply_thresholds runs in a worker thread; the async meter runs on the event loop.
        return anyio.from_thread.run(
            partial(state.meter.set_threshold, account_id, credit_type, kind, threshold)
        )

    await run_in_threadpool(
        thresholds.apply_thresholds, state.engine, account_id, kind, list(given), write
    )


def _request_flush(state: AppState) -> None:
    with queue_redis(state) as queue_client:
        request_flush(queue_client, state.sync_redis(), state.keys)


async def await_ledger_entry(state: AppState, entry_id: str) -> bool:
    """Whether the entry reached the SQL ledger within LEDGER_WAIT_S, so the ledger an admin
    reads next shows what they just did. Flushing is the worker's job, never the API's: this
    asks for a flush (the trigger already reacts to the journal) and waits for the row."""
    await run_in_threadpool(_request_flush, state)
    with anyio.move_on_after(LEDGER_WAIT_S):
        while not await run_in_threadpool(entries.entry_in_ledger, state.engine, entry_id):
            await anyio.sleep(LEDGER_POLL_S)
        return True
    return False
