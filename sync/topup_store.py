"""Auto top-up rules in SQL (issue 16 item 4): the rule of a wallet and the card an
opted-in checkout saved. The attempts are sync/topup_attempts.py's; no Stripe here:
sync/topups.py pays, sync/purchases.py grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, select, update

from meter import validate
from meter.bounds import CREDITS_MAX
from meter.times import rfc3339
from sync import audit, thresholds
from sync.db import write_transaction
from sync.models import T_SAVED_PAYMENT_METHODS, T_TOPUP_RULES
from sync.sqlops import dialect_insert

DAILY_MAX_MAX: Final = 24  # a runaway crossing loop buys at most one top-up an hour on average


class TopupError(ValueError):
    """A bad rule; `field` names what is wrong (the API answers 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Rule:
    account_id: str
    credit_type: str
    threshold: int
    credits: int
    daily_max: int
    enabled: bool
    consecutive_failures: int
    disabled_reason: str | None
    updated_at_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "credit_type": self.credit_type,
            "threshold": self.threshold,
            "credits": self.credits,
            "daily_max": self.daily_max,
            "enabled": self.enabled,
            "consecutive_failures": self.consecutive_failures,
            "disabled_reason": self.disabled_reason,
            "updated_at": rfc3339(self.updated_at_ms),
        }


@dataclass(frozen=True)
class SavedCard:
    customer_id: str
    payment_method_id: str


# --- rules -----------------------------------------------------------------------------------


def check_rule(threshold: object, credits: object, daily_max: object) -> tuple[int, int, int]:
    checked: list[int] = []
    for field, value, low, high in (
        ("threshold", threshold, thresholds.THRESHOLD_MIN, thresholds.THRESHOLD_MAX),
        ("credits", credits, 1, CREDITS_MAX),
        ("daily_max", daily_max, 1, DAILY_MAX_MAX),
    ):
        # bool is an int subclass: True must not buy one credit.
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise TopupError(field, f"must be an integer in [{low}, {high}]")
        checked.append(value)
    return checked[0], checked[1], checked[2]


def _rule(row: Any) -> Rule:
    return Rule(
        account_id=row.account_id,
        credit_type=row.credit_type,
        threshold=row.threshold,
        credits=row.credits,
        daily_max=row.daily_max,
        enabled=bool(row.enabled),
        consecutive_failures=row.consecutive_failures,
        disabled_reason=row.disabled_reason,
        updated_at_ms=row.updated_at_ms,
    )


def read_rule(conn: Connection, account_id: str, credit_type: str) -> Rule | None:
    r = T_TOPUP_RULES.c
    row = conn.execute(
        select(T_TOPUP_RULES).where(r.account_id == account_id, r.credit_type == credit_type)
    ).first()
    return None if row is None else _rule(row)


def get_rule(engine: Engine, account_id: str, credit_type: str) -> Rule | None:
    with engine.connect() as conn:
        return read_rule(conn, account_id, credit_type)


def account_rules(engine: Engine, account_id: str) -> list[Rule]:
    r = T_TOPUP_RULES.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_TOPUP_RULES).where(r.account_id == account_id).order_by(r.credit_type)
        ).all()
    return [_rule(row) for row in rows]


def set_rule(
    engine: Engine,
    actor: str,
    account_id: str,
    credit_type: str,
    *,
    threshold: int,
    credits: int,
    daily_max: int,
    now_ms: int,
) -> Rule:
    """Saves the rule enabled, its failure count back to 0 (setting it again re-enables a
    rule its failures disabled), with its audit row."""
    validate.account_id(account_id)
    validate.credit_type(credit_type)
    threshold, credits, daily_max = check_rule(threshold, credits, daily_max)
    values = {
        "threshold": threshold,
        "credits": credits,
        "daily_max": daily_max,
        "enabled": True,
        "consecutive_failures": 0,
        "disabled_reason": None,
        "updated_at_ms": now_ms,
    }

    def txn(conn: Connection) -> Rule:
        stmt = dialect_insert(conn, T_TOPUP_RULES)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["account_id", "credit_type"], set_=values),
            [
                {"account_id": account_id, "credit_type": credit_type, "created_at_ms": now_ms}
                | values
            ],
        )
        detail = {"threshold": threshold, "credits": credits, "daily_max": daily_max}
        audit.record_in(conn, actor, "topup.set", f"{account_id}/{credit_type}", detail)
        rule = read_rule(conn, account_id, credit_type)
        assert rule is not None
        return rule

    return write_transaction(engine, txn)


def disable_rule(
    engine: Engine, actor: str, account_id: str, credit_type: str, reason: str, now_ms: int
) -> Rule | None:
    """Disables the rule (kept, with its attempts, for the record); None when there is none."""

    def txn(conn: Connection) -> Rule | None:
        r = T_TOPUP_RULES.c
        done = conn.execute(
            update(T_TOPUP_RULES)
            .where(r.account_id == account_id, r.credit_type == credit_type)
            .values(enabled=False, disabled_reason=reason, updated_at_ms=now_ms)
        )
        if done.rowcount != 1:
            return None
        audit.record_in(conn, actor, "topup.disable", f"{account_id}/{credit_type}", {})
        return read_rule(conn, account_id, credit_type)

    return write_transaction(engine, txn)


def opted_in(engine: Engine, account_id: str) -> bool:
    """Whether the account's checkouts save the card: it has an enabled top-up rule."""
    r = T_TOPUP_RULES.c
    with engine.connect() as conn:
        found = conn.execute(
            select(r.credit_type).where(r.account_id == account_id, r.enabled).limit(1)
        ).first()
    return found is not None


# --- the saved card --------------------------------------------------------------------------


def save_card(engine: Engine, account_id: str, card: SavedCard, now_ms: int) -> None:
    values = {
        "customer_id": card.customer_id,
        "payment_method_id": card.payment_method_id,
        "saved_at_ms": now_ms,
    }

    def txn(conn: Connection) -> None:
        stmt = dialect_insert(conn, T_SAVED_PAYMENT_METHODS)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["account_id"], set_=values),
            [{"account_id": account_id} | values],
        )

    write_transaction(engine, txn)


def saved_card(engine: Engine, account_id: str) -> SavedCard | None:
    t = T_SAVED_PAYMENT_METHODS.c
    with engine.connect() as conn:
        row = conn.execute(
            select(t.customer_id, t.payment_method_id).where(t.account_id == account_id)
        ).first()
    return None if row is None else SavedCard(row.customer_id, row.payment_method_id)
