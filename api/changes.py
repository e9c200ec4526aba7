"""Admin changes shared by the JSON API and the dashboard: each one writes, makes the change
visible where it must be (Redis replicas, the SQL ledger) and lands in the audit log with the
key that made it."""

from __future__ import annotations

from typing import Any, Final

from starlette.concurrency import run_in_threadpool

from api.schemas import AdjustmentIn
from api.state import AppState
from meter.models import AdjustResult, Tool
from meter.redis_conn import sync_client
from sync import audit, tools
from sync.catalog import save_tools
from sync.flush import Flusher

LEDGER_FLUSH_BUDGET_S: Final = 2.0  # an admin waits this long at most for their ledger row


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


def _flush_bucket(state: AppState, bucket: int) -> None:
    client = sync_client(state.redis_url)
    flusher = Flusher(client, state.engine, state.keys)
    try:
        flusher.flush_bucket(bucket, LEDGER_FLUSH_BUDGET_S)
    finally:
        flusher.close()
        client.close()


async def flush_account(state: AppState, account_id: str) -> None:
    """Writes the account's bucket of the journal to SQL now, so the ledger an admin reads
    next shows what they just did. A worker holding the bucket is flushing it already."""
    await run_in_threadpool(_flush_bucket, state, state.keys.bucket(account_id))
