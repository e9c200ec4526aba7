"""Wallet alert thresholds (SQL wallet_thresholds): per account and credit type, kind low
is the balance.low alert's threshold, kind topup is auto top-up's. SQL holds them (audited);
Redis carries a copy on the wallet hash, where the scripts flag the journal entry whose
change crosses one (lua/includes/crossings.lua), put in force as sync/in_force says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from meter import bounds, validate
from meter.client import Meter
from meter.errors import InvalidArgument
from meter.wire import THRESHOLD_FIELDS
from sync import audit
from sync.db import write_transaction
from sync.in_force import until_agreed
from sync.models import T_ACCOUNTS, T_THRESHOLDS
from sync.sqlops import dialect_insert

KINDS: Final = tuple(THRESHOLD_FIELDS)  # low | topup
THRESHOLD_MIN: Final = 1  # a low alert at 0 would be balance.depleted, which needs none
THRESHOLD_MAX: Final = bounds.CREDITS_MAX  # a balance never exceeds it
THRESHOLDS_PER_CHANGE_MAX: Final = 32  # credit types one PATCH may set: bounds its rounds


class UnknownAccount(LookupError):
    """Thresholds are set on accounts that exist (made by their first use)."""


def check(credit_type: str, kind: str, threshold: int | None) -> None:
    """Raises InvalidArgument for a malformed credit type, kind or threshold."""
    validate.credit_type(credit_type)
    if kind not in KINDS:
        raise InvalidArgument("kind", f"must be one of {', '.join(KINDS)}")
    if threshold is not None:
        validate.integer("threshold", threshold, THRESHOLD_MIN, THRESHOLD_MAX)


def _read(conn: Connection, account_id: str, kind: str) -> dict[str, int]:
    t = T_THRESHOLDS
    rows = conn.execute(
        select(t.c.credit_type, t.c.threshold)
        .where(t.c.account_id == account_id, t.c.kind == kind)
        .order_by(t.c.credit_type)
    )
    return {r.credit_type: r.threshold for r in rows}


def get_thresholds(engine: Engine, account_id: str, kind: str) -> dict[str, int]:
    """credit type -> threshold of the account's wallets that have one of this kind."""
    with engine.connect() as conn:
        return _read(conn, account_id, kind)


def save_thresholds(
    engine: Engine, actor: str, account_id: str, kind: str, changes: Mapping[str, int | None]
) -> dict[str, int]:
    """Writes `changes` (credit type -> threshold, None removes) with one audit row each,
    in one transaction -> the account's thresholds of this kind now. The Redis half is
    apply_thresholds'."""
    if len(changes) > THRESHOLDS_PER_CHANGE_MAX:
        raise InvalidArgument("thresholds", f"at most {THRESHOLDS_PER_CHANGE_MAX} per change")
    for credit_type, threshold in changes.items():
        check(credit_type, kind, threshold)
    t = T_THRESHOLDS

    def txn(conn: Connection) -> dict[str, int]:
        known = conn.execute(select(T_ACCOUNTS.c.id).where(T_ACCOUNTS.c.id == account_id))
        if known.first() is None:
            raise UnknownAccount(f"no account {account_id!r}: accounts are made by their first use")
        for credit_type, threshold in sorted(changes.items()):
            where = (t.c.account_id == account_id, t.c.credit_type == credit_type, t.c.kind == kind)
            if threshold is None:
                conn.execute(t.delete().where(*where))
            else:
                stmt = dialect_insert(conn, t).values(
                    account_id=account_id, credit_type=credit_type, kind=kind, threshold=threshold
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["account_id", "credit_type", "kind"],
                        set_={"threshold": threshold},
                    )
                )
            detail = {"credit_type": credit_type, "kind": kind, "threshold": threshold}
            audit.record_in(conn, actor, "account.threshold", account_id, detail)
        return _read(conn, account_id, kind)

    return write_transaction(engine, txn)


def apply_thresholds(
    engine: Engine,
    account_id: str,
    kind: str,
    credit_types: list[str],
    write: Callable[[str, int | None], object],
) -> None:
    """Puts SQL's thresholds of these wallets in force in Redis (sync/in_force):
    write(credit type, threshold) is the meter's set_threshold of the account and kind."""

    def read() -> dict[str, int | None]:
        now = get_thresholds(engine, account_id, kind)
        return {ct: now.get(ct) for ct in credit_types}

    def write_all(values: dict[str, int | None]) -> None:
        for credit_type, threshold in values.items():
            write(credit_type, threshold)

    until_agreed(read(), write_all, read)


def set_threshold(
    engine: Engine,
    meter: Meter,
    actor: str,
    account_id: str,
    credit_type: str,
    kind: str,
    threshold: int | None,
) -> None:
    """One wallet's threshold (None removes it): SQL with its audit row, then Redis."""
    validate.account_id(account_id)
    save_thresholds(engine, actor, account_id, kind, {credit_type: threshold})
    apply_thresholds(
        engine,
        account_id,
        kind,
        [credit_type],
        lambda ct, t: meter.set_threshold(account_id, ct, kind, t),
    )
