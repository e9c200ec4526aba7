"""The dashboard's pages (GET): overview, tools, accounts, one account, sync health, login.
Each reads through sync/ and the meter, then renders a template; forms post to actions.py."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, RedirectResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.admin import charts
from api.admin.render import STATIC_DIR, page
from api.admin.session import PageSession, current_session, login_token, set_login_cookie
from api.schemas import AccountId, SearchText
from api.state import AppState, app_state, read_sync_status
from meter.times import now_ms
from sync import accounts, entries, reports, thresholds, tools, topup_attempts, topup_store

router = APIRouter(prefix="/admin", include_in_schema=False)
State = Annotated[AppState, Depends(app_state)]

TOP_CONSUMERS: Final = 10  # the overview's table; the full list is the usage report by account
OPEN_HOLDS_SHOWN: Final = 20  # the soonest to expire; the rest are counted, not listed
LEDGER_PAGE: Final = 50  # rows of an account's ledger per page
FAVICON: Final = STATIC_DIR / "admin" / "favicon.ico"


def _overview_data(state: AppState, rng: reports.Range, now: int) -> dict[str, Any]:
    engine = state.engine
    usage_by_day_tool = reports.usage(engine, rng, ("day", "tool", "credit_type"))
    revenue_by_day = reports.revenue(engine, rng, ("day",))
    liability_by_day = reports.liability_series(engine, rng)
    return {
        "charts": {
            "usage": [c.as_dict() for c in charts.usage_charts(usage_by_day_tool, rng)],
            "revenue": [c.as_dict() for c in charts.revenue_charts(revenue_by_day, rng)],
            "liability": [c.as_dict() for c in charts.liability_charts(liability_by_day, rng)],
        },
        "liability": reports.liability(engine, now).as_dicts(),
        "revenue": reports.revenue(engine, rng, ("pack", "plan")).as_dicts(),
        "tools": reports.usage(engine, rng, ("tool", "credit_type")).as_dicts(),
        "top": reports.top_consumers(engine, rng, TOP_CONSUMERS).as_dicts(),
        "holds": reports.open_holds(engine, now, OPEN_HOLDS_SHOWN).as_dicts(),
    }


@router.get("")
async def overview(
    request: Request,
    state: State,
    session: PageSession,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    now = now_ms()
    error = None
    try:
        rng = reports.parse_range(from_, to, now)
    except reports.ReportError as exc:
        error = f"{exc.field}: {exc}"
        rng = reports.parse_range(None, None, now)
    data = await run_in_threadpool(_overview_data, state, rng, now)
    return page(
        request,
        "admin/overview.html",
        session,
        status_code=422 if error else 200,
        error=error,
        from_day=charts.days_of(rng)[0],
        to_day=charts.end_day(rng),
        **data,
    )


@router.get("/tools")
async def tools_page(
    request: Request,
    state: State,
    session: PageSession,
    changed: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    return await render_tools(request, state, session, changed=changed)


async def render_tools(
    request: Request,
    state: AppState,
    session: Any,
    changed: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The tools page; actions.py renders it again with the error of a refused change."""
    rng = reports.parse_range(None, None, now_ms())
    catalog = await run_in_threadpool(tools.list_tools, state.engine)
    usage = await run_in_threadpool(reports.usage, state.engine, rng, ("tool",))
    return page(
        request,
        "admin/tools.html",
        session,
        status_code=status_code,
        tools=catalog,
        usage={row["tool"]: row for row in usage.as_dicts()},
        changed=changed,
        error=error,
    )


@router.get("/accounts")
async def accounts_page(
    request: Request,
    state: State,
    session: PageSession,
    q: Annotated[SearchText, Query(max_length=accounts.SEARCH_TEXT_MAX)] = "",
) -> Response:
    found = await run_in_threadpool(accounts.search_accounts, state.engine, q)
    return page(request, "admin/accounts.html", session, q=q, found=found)


@router.get("/accounts/{account_id}")
async def account_page(
    request: Request,
    account_id: AccountId,
    state: State,
    session: PageSession,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    adjusted: Annotated[str | None, Query(max_length=64)] = None,
    pending: bool = False,
    saved: bool = False,
) -> Response:
    if not await run_in_threadpool(accounts.account_exists, state.engine, account_id):
        # Reading must not create: the money routes' first touch would grant welcome credits.
        return page(request, "admin/missing.html", session, status_code=404, account_id=account_id)
    return await render_account(
        request, state, session, account_id, cursor, adjusted, pending, saved=saved
    )


async def render_account(
    request: Request,
    state: AppState,
    session: Any,
    account_id: str,
    cursor: str | None = None,
    adjusted: str | None = None,
    pending: bool = False,
    error: str | None = None,
    form: dict[str, str] | None = None,
    settings_error: str | None = None,
    settings_form: dict[str, str] | None = None,
    saved: bool = False,
) -> Response:
    """The account page; actions.py renders it again with the error of a refused adjustment
    or settings change, the admin's input kept in the form."""
    # The balance lists every credit type of the catalog and of the account's wallets.
    balance = await state.meter.balance(account_id)
    settings = await run_in_threadpool(accounts.get_settings, state.engine, account_id)
    assert settings is not None, "the page is only rendered for a known account"
    low = await run_in_threadpool(thresholds.get_thresholds, state.engine, account_id, "low")

    def read_ledger() -> entries.Page:
        try:
            return entries.account_entries(
                state.engine, account_id, limit=LEDGER_PAGE, cursor=cursor
            )
        except entries.BadCursor:  # a cursor edited by hand: start from the newest entries
            return entries.account_entries(state.engine, account_id, limit=LEDGER_PAGE)

    ledger = await run_in_threadpool(read_ledger)
    topups = await run_in_threadpool(_topups, state.engine, account_id)
    return page(
        request,
        "admin/account.html",
        session,
        status_code=422 if error or settings_error else 200,
        account_id=account_id,
        settings=settings,
        settings_form=settings_form or settings_fields(settings, low),
        low_balance=low,
        settings_error=settings_error,
        saved=saved,
        wallets=balance.wallets,
        credit_types=[w.credit_type for w in balance.wallets],
        ledger=ledger,
        topups=topups,
        adjusted=adjusted,
        pending=pending,
        error=error,
        form=form or {"credit_type": _default_credit_type(balance.wallets)},
        # One key per rendered form: a double submit adjusts once (the meter's idempotency).
        idempotency_key=str(uuid.uuid4()),
    )


@dataclass(frozen=True)
class Topups:
    """The account's auto top-up rules, each with its last attempts, and its saved card."""

    rules: list[tuple[topup_store.Rule, list[topup_attempts.Attempt]]]
    card_saved: bool


def _topups(engine: Engine, account_id: str) -> Topups | None:
    rules = topup_store.account_rules(engine, account_id)
    if not rules:
        return None
    return Topups(
        [(r, topup_attempts.last_attempts(engine, account_id, r.credit_type)) for r in rules],
        topup_store.saved_card(engine, account_id) is not None,
    )


LOW_FIELD_PREFIX = "low:"  # the settings form's field of a credit type's low threshold


def settings_fields(a: accounts.AccountSettings, low: dict[str, int]) -> dict[str, str]:
    """The settings form's fields as the page shows them (metadata as indented JSON, a
    low-balance threshold per credit type that has one)."""
    return {
        "status": a.status,
        "overdraft_limit": str(a.overdraft_limit),
        "email": a.email or "",
        "metadata": json.dumps(a.metadata, indent=2, sort_keys=True) if a.metadata else "",
        "rate_limits": ", ".join(f"{t}={limit}" for t, limit in sorted(a.rate_limits.items())),
        **{LOW_FIELD_PREFIX + ct: str(n) for ct, n in low.items()},
    }


def _default_credit_type(wallets: Any) -> str | None:
    """The adjust form starts on a wallet the account uses, not the catalog's first type."""
    used = [w.credit_type for w in wallets if w.balance or w.grants or w.debt]
    return used[0] if used else None


@router.get("/sync")
async def sync_page(request: Request, state: State, session: PageSession) -> Response:
    status = await run_in_threadpool(read_sync_status, state)
    return page(request, "admin/sync.html", session, status=status)


async def favicon(request: Request) -> Response:
    """Browsers ask for /favicon.ico on any page of the origin (the API's too): the
    dashboard's icon (the same file its pages link to), not a 404 in every log."""
    return FileResponse(FAVICON, media_type="image/x-icon")


# Starlette's add_route does not take the router's /admin prefix: this is the root path.
router.add_route("/favicon.ico", favicon, methods=["GET", "HEAD"], include_in_schema=False)


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await current_session(request) is not None:
        return RedirectResponse("/admin", status_code=303)
    return login_form(request)


def login_form(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = login_token(request)
    response = page(
        request, "admin/login.html", None, status_code=status_code, login_csrf=token, error=error
    )
    set_login_cookie(request, response, token)
    return response
