"""The statement of each report (SQLAlchemy Core), apart from running it, so that a test can
EXPLAIN exactly what a report runs. Part of sync.reports, which re-exports these.

Every statement reads one index (see the indexes in sync.models): usage, top consumers and
the liability series a covering index of ledger_entries led by created_at_ms; revenue the
purchases' created_at_ms index; liability the partial index of grants with credits left;
open holds the holds' (status, expires_at_ms) index. Only the wallets, one row per account
and credit type, are read whole (liability's debt and held, the series' totals).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    case,
    cast,
    func,
    literal_column,
    null,
    or_,
    select,
    union_all,
)

from sync.models import T_GRANTS, T_HOLDS, T_LEDGER, T_PURCHASES, T_WALLETS
from sync.reports_input import DAY_MS, Range

EXPIRING_SOON_DAYS: Final = (7, 30)  # liability's expiring_7d and expiring_30d columns

USAGE_KINDS = ("charge", "refund")
SALE_STATUSES = ("paid", "partially_refunded", "refunded", "disputed")  # pending: not paid yet
SALE_SOURCES = ("pack", "custom", "plan", "topup")  # a rollover sells nothing

_L = T_LEDGER.c
_P = T_PURCHASES.c
_G = T_GRANTS.c
_W = T_WALLETS.c
_H = T_HOLDS.c

# The day number of a time. The divisor is inlined, not a parameter: PostgreSQL must see
# one expression in the select list and in GROUP BY, and its statistics on the ledger's day
# (migration 0003) serve only this very expression.
_DAY_DIVISOR = literal_column(str(DAY_MS), BigInteger)


def _day(created_at_ms: ColumnElement[int]) -> ColumnElement[int]:
    return created_at_ms // _DAY_DIVISOR


_USAGE_COLUMNS: dict[str, ColumnElement[Any]] = {
    "day": _day(_L.created_at_ms).label("day"),
    "tool": _L.tool,
    "account": _L.account_id,
    "credit_type": _L.credit_type,
}
_REVENUE_COLUMNS: dict[str, ColumnElement[Any]] = {
    "day": _day(_P.created_at_ms).label("day"),
    "pack": _P.pack_id,
    "plan": _P.plan_id,
}
USAGE_GROUPS: tuple[str, ...] = tuple(_USAGE_COLUMNS)
REVENUE_GROUPS: tuple[str, ...] = tuple(_REVENUE_COLUMNS)
LIABILITY_GROUPS: tuple[str, ...] = ("credit_type", "day")  # now, or the daily series

# A literal, not a parameter: a partial index serves only a query that states its predicate
# (grants.remaining > 0, see sync.models) in so many words.
_LIVE = _G.remaining > literal_column("0")
_ZERO = literal_column("0", BigInteger)
_LIABILITY_FIGURES = (
    "paid",
    "promotional",
    "outstanding",
    *(f"expiring_{days}d" for days in EXPIRING_SOON_DAYS),
    "debt",
    "held",
)


def _total(expr: ColumnElement[Any], name: str) -> ColumnElement[int]:
    # PostgreSQL sums bigints as numeric: cast back, so every amount comes out an int.
    return cast(func.coalesce(func.sum(expr), 0), BigInteger).label(name)


def _charged_or_refunded(rng: Range) -> ColumnElement[bool]:
    return and_(
        _L.created_at_ms >= rng.from_ms, _L.created_at_ms < rng.to_ms, _L.kind.in_(USAGE_KINDS)
    )


def usage_query(rng: Range, group_by: tuple[str, ...]) -> Select[Any]:
    assert set(group_by) <= set(USAGE_GROUPS), group_by
    groups = [_USAGE_COLUMNS[g] for g in group_by]
    return (
        select(
            *groups,
            func.count().filter(_L.kind == "charge").label("charges"),
            func.count().filter(_L.kind == "refund").label("refunds"),
            _total(-_L.amount, "credits"),
        )
        .where(_charged_or_refunded(rng))
        .group_by(*groups)
        .order_by(*(g.asc().nulls_last() for g in groups))
    )


def revenue_query(rng: Range, group_by: tuple[str, ...]) -> Select[Any]:
    assert set(group_by) <= set(REVENUE_GROUPS), group_by
    groups = [_REVENUE_COLUMNS[g] for g in group_by]
    return (
        select(
            *groups,
            _P.currency,
            func.count().label("purchases"),
            _total(_P.credits, "credits"),
            _total(_P.amount_minor, "gross_minor"),
            _total(_P.refunded_minor, "refunded_minor"),
            _total(_P.amount_minor - _P.refunded_minor, "net_minor"),
        )
        .where(
            _P.created_at_ms >= rng.from_ms,
            _P.created_at_ms < rng.to_ms,
            _P.status.in_(SALE_STATUSES),
            _P.source.in_(SALE_SOURCES),
        )
        .group_by(*groups, _P.currency)
        .order_by(*(g.asc().nulls_last() for g in groups), _P.currency)
    )


def liability_query(now_ms: int) -> Select[Any]:
    """Live grants summed per credit type, beside the wallets' debt and held totals (one
    UNION ALL, so a credit type with only one of the two still has its row)."""

    def remaining_if(cond: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.sum(case((cond, _G.remaining), else_=0))

    grant_figures = [
        remaining_if(_G.category == "paid"),
        remaining_if(_G.category == "promotional"),
        func.sum(_G.remaining),
        *(remaining_if(_G.expires_at_ms <= now_ms + d * DAY_MS) for d in EXPIRING_SOON_DAYS),
        _ZERO,
        _ZERO,
    ]
    grants = (
        select(
            _G.credit_type,
            *(f.label(n) for f, n in zip(grant_figures, _LIABILITY_FIGURES, strict=True)),
        )
        .where(_LIVE, or_(_G.expires_at_ms.is_(None), _G.expires_at_ms > now_ms))
        .group_by(_G.credit_type)
    )
    zeros = [_ZERO] * (len(_LIABILITY_FIGURES) - 2)
    wallets = select(_W.credit_type, *zeros, func.sum(_W.debt), func.sum(_W.held)).group_by(
        _W.credit_type
    )
    both = union_all(grants, wallets).subquery()
    return (
        select(both.c.credit_type, *(_total(both.c[n], n) for n in _LIABILITY_FIGURES))
        .group_by(both.c.credit_type)
        .order_by(both.c.credit_type)
    )


def liability_series_query(rng: Range) -> CompoundSelect[Any]:
    """Per credit type: the wallets' total balance (day NULL), and the ledger's sums per day
    from rng.from_ms on, everything from rng.to_ms on as the day after the last.

    The wallets hold the sum of every ledger amount (the flush moves a wallet by its entries'
    amounts in their transaction), so the balance before the range is their total less what
    came after: only the range and what follows it are read, not all history. One statement,
    so the wallets and the ledger are read at one instant."""
    after_day = (rng.to_ms - 1) // DAY_MS + 1
    day = case((_L.created_at_ms >= rng.to_ms, after_day), else_=_day(_L.created_at_ms)).label(
        "day"
    )
    moves = (
        select(day, _L.credit_type, _total(_L.amount, "amount"))
        .where(_L.created_at_ms >= rng.from_ms)
        .group_by(day, _L.credit_type)
    )
    totals = select(null(), _W.credit_type, _total(_W.balance, "amount")).group_by(_W.credit_type)
    return union_all(moves, totals)


def top_consumers_query(rng: Range, limit: int) -> Select[Any]:
    credits = _total(-_L.amount, "credits")
    return (
        select(
            _L.account_id,
            _L.credit_type,
            func.count().filter(_L.kind == "charge").label("charges"),
            credits,
        )
        .where(_charged_or_refunded(rng))
        .group_by(_L.account_id, _L.credit_type)
        .order_by(credits.desc(), _L.account_id, _L.credit_type)
        .limit(limit)
    )


def open_holds_query(now_ms: int, limit: int) -> Select[Any]:
    return (
        select(_H.id, _H.account_id, _H.credit_type, _H.tool, _H.amount, _H.expires_at_ms)
        .where(_H.status == "active", _H.expires_at_ms > now_ms)
        .order_by(_H.expires_at_ms, _H.id)
        .limit(limit)
    )
