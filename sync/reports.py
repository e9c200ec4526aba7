"""Admin reports over the synced SQL: usage, revenue, liability and its daily series, top
consumers and open holds, each a plain table (`Report`) that the HTTP routes, the CLI and the
dashboard serve as JSON, print, or send as CSV.

Each report is one read-only statement on one connection, built by its `*_query` function
(sync.reports_sql) so that a test can EXPLAIN exactly what the report runs. Ranges and
groupings are parsed in sync.reports_input. This module re-exports both: import from here.

What the figures mean:
- Ranges are half-open, [from, to); days are UTC days (created_at_ms // DAY_MS), written
  'YYYY-MM-DD'. A date typed alone means 00:00 UTC, so `to=2026-11-22` ends with the 21st.
- Usage counts charges and refunds; `credits` is what was consumed net: credits charged
  minus credits refunded (minus the sum of their signed amounts).
- Revenue counts purchases that were paid (paid, partially_refunded, refunded or disputed): a
  pending purchase is not paid yet, and a rollover carries credits over, it sells nothing. A
  refund (or a dispute that withdrew the money, which the purchase records as refunded; a won
  one no longer counts) counts against the purchase it refunds, on the purchase's day and in
  its currency, not on the day the money went back: a sale and its refund stay on one row, so
  no day's net goes negative, at the cost of a past day's net falling when a later refund
  arrives. A plan invoice's money and refunds are on its first credit type's purchase only.
  Amounts are in the catalog's currency (under Adaptive Pricing the customer paid in another;
  the purchase keeps that as presentment_amount_minor); two currencies are never added.
- Liability is what grants still owe (remaining credits of grants not expired at `now`), with
  the debt and held amounts of the wallet snapshots beside it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import CompoundSelect, Engine, Select

from meter.times import EPOCH
from sync.reports_input import (
    DAY_MS,
    DEFAULT_SPAN_MS,
    RANGE_END_MS,
    RANGE_MIN_MS,
    REPORT_SPAN_MAX_MS,
    Range,
    ReportError,
    parse_group_by,
    parse_range,
)
from sync.reports_sql import (
    LIABILITY_GROUPS,
    REVENUE_GROUPS,
    USAGE_GROUPS,
    liability_query,
    liability_series_query,
    open_holds_query,
    revenue_query,
    top_consumers_query,
    usage_query,
)

__all__ = [
    "DAY_MS",
    "DEFAULT_SPAN_MS",
    "LIABILITY_GROUPS",
    "OPEN_HOLDS_LIMIT_MAX",
    "RANGE_END_MS",
    "RANGE_MIN_MS",
    "REPORT_SPAN_MAX_MS",
    "REVENUE_GROUPS",
    "TOP_LIMIT_MAX",
    "USAGE_GROUPS",
    "Range",
    "Report",
    "ReportError",
    "liability",
    "liability_query",
    "liability_series",
    "liability_series_query",
    "open_holds",
    "open_holds_query",
    "parse_group_by",
    "parse_range",
    "revenue",
    "revenue_query",
    "top_consumers",
    "top_consumers_query",
    "usage",
    "usage_query",
]

TOP_LIMIT_MAX: Final = 1_000  # a ranking to read; a longer list is an export: usage by account
OPEN_HOLDS_LIMIT_MAX: Final = 1_000  # the soonest to expire; their total is liability's `held`

Cell = int | str | None

FORMULA_STARTS: Final = frozenset("=+-@\t\r")  # what spreadsheets evaluate (OWASP CSV injection)


@dataclass(frozen=True)
class Report:
    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]  # ints for amounts and counts, days as 'YYYY-MM-DD'

    def as_dicts(self) -> list[dict[str, Cell]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_csv(self) -> str:
        """The columns, then the rows, each line ended by '\\r\\n' (RFC 4180, the csv
        module's default); None is an empty cell. A text cell a spreadsheet would read as a
        formula (account ids may start with '-' or '@') gets a leading apostrophe."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns)
        writer.writerows([_inert(v) for v in row] for row in self.rows)
        return out.getvalue()


def _inert(value: Cell) -> Cell:
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


# --- the reports -------------------------------------------------------------------------


def usage(engine: Engine, rng: Range, group_by: tuple[str, ...]) -> Report:
    """Charges and refunds in the range per group: counts, and credits consumed net."""
    return _run(engine, "usage", usage_query(rng, group_by))


def revenue(engine: Engine, rng: Range, group_by: tuple[str, ...]) -> Report:
    """Paid purchases made in the range per group and currency, in minor units."""
    return _run(engine, "revenue", revenue_query(rng, group_by))


def liability(engine: Engine, now_ms: int) -> Report:
    """Per credit type, what live grants owe at `now_ms` (paid, promotional, all, and what
    of it expires within 7 and 30 days), and the wallets' debt and held totals."""
    return _run(engine, "liability", liability_query(now_ms))


def top_consumers(engine: Engine, rng: Range, limit: int) -> Report:
    """The accounts (per credit type) that consumed the most credits net in the range."""
    _check_limit(limit, TOP_LIMIT_MAX)
    return _run(engine, "top_consumers", top_consumers_query(rng, limit))


def open_holds(engine: Engine, now_ms: int, limit: int) -> Report:
    """Active holds not expired at `now_ms`, soonest expiry first."""
    _check_limit(limit, OPEN_HOLDS_LIMIT_MAX)
    return _run(engine, "open_holds", open_holds_query(now_ms, limit))


def liability_series(engine: Engine, rng: Range) -> Report:
    """Outstanding net balance per credit type at the end of each UTC day of the range (the
    last day closes at rng.to_ms when the range ends inside it): the sum of every ledger
    amount before then. Every credit type with a wallet (or an entry) has a row every day."""
    first_day = rng.from_ms // DAY_MS
    last_day = (rng.to_ms - 1) // DAY_MS
    totals: dict[str, int] = {}
    moves: dict[str, dict[int, int]] = {}
    for day, credit_type, amount in _fetch(engine, liability_series_query(rng)):
        if day is None:
            totals[credit_type] = amount
        else:
            moves.setdefault(credit_type, {})[day] = amount
    credit_types = sorted(totals.keys() | moves.keys())
    # Before the range: the total of all time less everything from rng.from_ms on.
    balances = {ct: totals.get(ct, 0) - sum(moves.get(ct, {}).values()) for ct in credit_types}
    rows: list[tuple[Cell, ...]] = []
    for day in range(first_day, last_day + 1):
        for ct in credit_types:
            balances[ct] += moves.get(ct, {}).get(day, 0)
            rows.append((_day_text(day), ct, balances[ct]))
    return Report("liability_series", ("day", "credit_type", "balance"), rows)


def _check_limit(limit: int, limit_max: int) -> None:
    if type(limit) is not int or not 1 <= limit <= limit_max:
        raise ReportError("limit", f"limit must be an integer from 1 to {limit_max}")


def _run(engine: Engine, name: str, query: Select[Any]) -> Report:
    columns = tuple(query.selected_columns.keys())
    day = columns.index("day") if "day" in columns else None
    rows = [
        tuple(_day_text(v) if i == day else v for i, v in enumerate(row))
        for row in _fetch(engine, query)
    ]
    return Report(name, columns, rows)


def _fetch(engine: Engine, query: Select[Any] | CompoundSelect[Any]) -> Sequence[Any]:
    with engine.connect() as conn:
        # A report never writes: PostgreSQL is told so; other dialects ignore the option.
        conn.execution_options(postgresql_readonly=True)
        return conn.execute(query).all()


def _day_text(day: int) -> str:
    return (EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
