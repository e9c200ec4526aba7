"""The dashboard's forms (POST): login, logout, a tool's cost and switch, an account's
adjustment and settings. Each checks the session and its CSRF token before anything is written, goes
through the same code as the JSON API (api/changes.py), lands in the audit log with the
admin's key id, and answers a redirect (post/redirect/get) or the page with the error."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api import changes
from api.admin.pages import LOW_FIELD_PREFIX, login_form, render_account, render_tools
from api.admin.render import page
from api.admin.session import (
    LOGIN_COOKIE,
    PostedForm,
    check_token,
    close_session,
    open_session,
    read_form,
)
from api.auth import count_failure
from api.schemas import AccountId, AccountPatchIn, AdjustmentIn, ToolName, ToolPatch
from api.state import AppState, app_state
from meter import errors as me
from sync import accounts, audit, thresholds
from sync.apikeys import scope_allows, verify_key

router = APIRouter(prefix="/admin", include_in_schema=False)
State = Annotated[AppState, Depends(app_state)]


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "form"
    return f"{field}: {err['msg']}"


@router.post("/login")
async def login(request: Request, state: State) -> Response:
    form = await read_form(request)
    check_token(request.cookies.get(LOGIN_COOKIE), form)
    presented = form.get("api_key", "").strip()
    info = await run_in_threadpool(verify_key, state.engine, state.secret_key, presented)
    if info is None:
        await count_failure(state, request, "dashboard login with an invalid or revoked key")
        return login_form(request, "That is not a live API key.", status_code=401)
    if not scope_allows(info.scope, "admin"):
        return login_form(
            request,
            f"Key {info.prefix} has scope {info.scope}; the dashboard needs an admin key.",
            status_code=403,
        )
    response = _see_other("/admin")
    await open_session(state, request, response, info.id, info.prefix)
    await run_in_threadpool(audit.record, state.engine, info.id, "admin.login", info.prefix, {})
    return response


@router.post("/logout")
async def logout(request: Request, state: State, posted: PostedForm) -> Response:
    response = _see_other("/admin/login")
    await close_session(state, request, response)
    actor = posted.session.actor
    await run_in_threadpool(
        audit.record, state.engine, actor, "admin.logout", posted.session.key_prefix, {}
    )
    return response


def _tool_changes(form: dict[str, str]) -> dict[str, Any]:
    """The form's fields as typed values; ToolPatch then checks them as on PATCH /v1/tools."""
    fields: dict[str, Any] = {}
    if "cost" in form:
        try:
            fields["cost"] = int(form["cost"])
        except ValueError as exc:
            raise ValueError("cost: must be a whole number of credits") from exc
    if "active" in form:
        if form["active"] not in ("true", "false"):
            raise ValueError("active: must be true or false")
        fields["active"] = form["active"] == "true"
    if not fields:
        raise ValueError("nothing to change: send cost or active")
    return ToolPatch.model_validate(fields).model_dump(exclude_unset=True)


@router.post("/tools/{name}")
async def change_tool(
    name: ToolName, request: Request, state: State, posted: PostedForm
) -> Response:
    try:
        fields = _tool_changes(posted.form)
    except ValidationError as exc:
        return await _tools_with_error(request, state, posted, _first_error(exc))
    except ValueError as exc:
        return await _tools_with_error(request, state, posted, str(exc))
    tool = await changes.patch_tool(state, posted.session.actor, name, fields)
    if tool is None:
        return await _tools_with_error(request, state, posted, f"no tool named {name!r}", 404)
    return _see_other(f"/admin/tools?changed={quote(name)}")


async def _tools_with_error(
    request: Request, state: AppState, posted: Any, error: str, status_code: int = 422
) -> Response:
    return await render_tools(request, state, posted.session, error=error, status_code=status_code)


@router.post("/accounts/{account_id}/adjustments")
async def adjust_account(
    account_id: AccountId, request: Request, state: State, posted: PostedForm
) -> Response:
    form = posted.form
    try:
        amount = int(form.get("amount", ""))
    except ValueError:
        amount = 0  # AdjustmentIn names it: "must not be 0"
    try:
        body = AdjustmentIn.model_validate(
            {
                "credit_type": form.get("credit_type", ""),
                "amount": amount,
                "reason": form.get("reason", "").strip(),
            }
        )
    except ValidationError as exc:
        return await render_account(
            request, state, posted.session, account_id, error=_first_error(exc), form=form
        )
    try:
        r = await changes.adjust(
            state, posted.session.actor, account_id, body, form.get("idempotency_key") or None
        )
    except me.MeterError as exc:
        return await render_account(
            request, state, posted.session, account_id, error=str(exc), form=form
        )
    in_ledger = await changes.await_ledger_entry(state, r.id)
    pending = "" if in_ledger else "&pending=1"
    return _see_other(
        f"/admin/accounts/{quote(account_id, safe='')}?adjusted={quote(r.id)}{pending}"
    )


def _low_changes(form: dict[str, str], low_now: dict[str, int]) -> dict[str, int | None]:
    """The low-balance thresholds the admin changed (an emptied field removes one)."""
    changed: dict[str, int | None] = {}
    for name, value in form.items():
        if not name.startswith(LOW_FIELD_PREFIX):
            continue
        credit_type = name.removeprefix(LOW_FIELD_PREFIX)
        try:
            wanted = int(value) if value.strip() else None
        except ValueError as exc:
            raise ValueError(f"{credit_type}: must be a whole number of credits") from exc
        if wanted != low_now.get(credit_type):
            changed[credit_type] = wanted
    return changed


def _rate_limit_changes(text: str, now: dict[str, str]) -> dict[str, str | None]:
    """The rate limits field ("TOOL=600/minute, *=10/second"; empty: none of its own) as
    PATCH rate_limits: what differs from `now`, a tool left out -> None (the catalog's)."""
    wanted: dict[str, str] = {}
    for item in text.replace(",", " ").split():
        tool, sep, limit = item.partition("=")
        if not sep or not tool or not limit:
            raise ValueError(f"rate_limits: {item!r}: write TOOL=N/unit, separated by commas")
        wanted[tool] = limit
    changed: dict[str, str | None] = {t: v for t, v in wanted.items() if now.get(t) != v}
    changed.update({t: None for t in now if t not in wanted})
    return changed


def _settings_changes(
    form: dict[str, str], now: accounts.AccountSettings, low_now: dict[str, int]
) -> dict[str, Any]:
    """The fields the admin changed, typed; AccountPatchIn then checks them as on PATCH
    /v1/accounts/{id}. An empty email or metadata clears it, an empty threshold removes it."""
    given: dict[str, Any] = {}
    if "status" in form:
        given["status"] = form["status"]
    if "overdraft_limit" in form:
        try:
            given["overdraft_limit"] = int(form["overdraft_limit"])
        except ValueError as exc:
            raise ValueError("overdraft_limit: must be a whole number of credits") from exc
    if "email" in form:
        given["email"] = form["email"].strip() or None
    if "metadata" in form:
        text = form["metadata"].strip()
        try:
            given["metadata"] = json.loads(text) if text else None
        except ValueError as exc:
            raise ValueError("metadata: must be a JSON object, or empty") from exc
    if "rate_limits" in form:
        rates = _rate_limit_changes(form["rate_limits"], now.rate_limits)
        if rates:
            given["rate_limits"] = rates
    low = _low_changes(form, low_now)
    if low:
        given["low_balance_thresholds"] = low
    checked = AccountPatchIn.model_validate(given).model_dump(exclude_unset=True)
    current = {
        "status": now.status,
        "overdraft_limit": now.overdraft_limit,
        "email": now.email,
        "metadata": now.metadata,
        "rate_limits": {},  # as the thresholds: only the changed ones were kept
        "low_balance_thresholds": {},  # _low_changes kept only the changed ones
    }
    return {k: v for k, v in checked.items() if v != current[k]}


@router.post("/accounts/{account_id}/settings")
async def change_account_settings(
    account_id: AccountId, request: Request, state: State, posted: PostedForm
) -> Response:
    now = await run_in_threadpool(accounts.get_settings, state.engine, account_id)
    if now is None:
        return page(
            request, "admin/missing.html", posted.session, status_code=404, account_id=account_id
        )
    try:
        low_now = await run_in_threadpool(
            thresholds.get_thresholds, state.engine, account_id, "low"
        )
        fields = _settings_changes(posted.form, now, low_now)
    except ValidationError as exc:
        error = _first_error(exc)
    except ValueError as exc:
        error = str(exc)
    else:
        if fields:
            await changes.patch_account(state, posted.session.actor, account_id, fields)
        return _see_other(f"/admin/accounts/{quote(account_id, safe='')}?saved=1")
    return await render_account(
        request,
        state,
        posted.session,
        account_id,
        settings_error=error,
        settings_form=posted.form,
    )
