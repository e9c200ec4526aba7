"""Tools (SPEC §7): SQL is the source of truth; every change rewrites the Redis replicas
before answering, so it applies to the very next charge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api import changes
from api.auth import Principal, require
from api.errors import Problem
from api.schemas import ToolList, ToolName, ToolOut, ToolPatch, ToolPut
from api.state import AppState, app_state
from meter.models import Tool
from sync import tools

router = APIRouter(prefix="/v1/tools", tags=["tools"])
State = Annotated[AppState, Depends(app_state)]


def _out(t: Tool) -> ToolOut:
    return ToolOut(
        name=t.name,
        display_name=t.display_name,
        description=t.description,
        cost=t.cost,
        credit_type=t.credit_type,
        active=t.active,
        rate_limit=t.rate_limit,
    )


@router.put("/{name}", response_model=ToolOut)
async def put_tool(
    name: ToolName,
    body: ToolPut,
    state: State,
    who: Annotated[Principal, Depends(require("admin"))],
) -> ToolOut:
    tool = Tool(name=name, **body.model_dump())
    await changes.put_tool(state, who.actor, tool, body.model_dump())
    return _out(tool)


@router.patch("/{name}", response_model=ToolOut)
async def patch_tool(
    name: ToolName,
    body: ToolPatch,
    state: State,
    who: Annotated[Principal, Depends(require("admin"))],
) -> ToolOut:
    fields = body.model_dump(exclude_unset=True)
    tool = await changes.patch_tool(state, who.actor, name, fields)
    if tool is None:
        raise Problem(404, f"tool {name!r} not found", slug="unknown-tool", tool=name)
    return _out(tool)


@router.get("", response_model=ToolList)
async def list_tools(state: State, _: Annotated[Principal, Depends(require("read"))]) -> ToolList:
    return ToolList(data=[_out(t) for t in await run_in_threadpool(tools.list_tools, state.engine)])


@router.get("/{name}", response_model=ToolOut)
async def get_tool(
    name: ToolName, state: State, _: Annotated[Principal, Depends(require("read"))]
) -> ToolOut:
    tool = await run_in_threadpool(tools.get_tool, state.engine, name)
    if tool is None:
        raise Problem(404, f"tool {name!r} not found", slug="unknown-tool", tool=name)
    return _out(tool)
