"""sync.writer on real SQL: journal entries become ledger rows and hold events once, and only
rows really inserted move the snapshots (wallet balance, debt and held, grant remainders,
hold states); the cursor only moves forward."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from sync.journal import Entry, parse, sortable
from sync.models import T_ACCOUNTS, T_GRANTS, T_HOLDS, T_LEDGER, T_WALLETS
from sync.writer import WriteResult, advance_cursor, read_cursor, write_entries
from tests.sync.conftest import account

BUCKET = 3
NOW_MS = 1_700_000_000_000
LATER_MS = NOW_MS + 600_000


class Journal:
    """Entries of one test account, with stream ids in journal order."""

    def __init__(self) -> None:
        self.account = account("writer")
        self.seq = 0

    def entry(self, entry_id: str, kind: str, amount: int, balance: int, **more: str) -> Entry:
        self.seq += 1
        fields = {
            "id": f"{self.account}-{entry_id}",
            "k": kind,
            "a": self.account,
            "t": "credits",
            "m": str(amount),
            "b": str(balance),
            "ts": str(NOW_MS + self.seq),
            **{k: v.replace("@", f"{self.account}-") for k, v in more.items()},
        }
        return parse(f"{NOW_MS}-{self.seq}", fields)


def _write(engine: Engine, entries: list[Entry]) -> WriteResult:
    with engine.begin() as conn:
        return write_entries(conn, BUCKET, entries, NOW_MS)


def _wallet(engine: Engine, acct: str) -> tuple[int, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            select(T_WALLETS.c.balance, T_WALLETS.c.debt, T_WALLETS.c.held).where(
                T_WALLETS.c.account_id == acct, T_WALLETS.c.credit_type == "credits"
            )
        ).one()
    return row[0], row[1], row[2]


def _grants(engine: Engine, acct: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(T_GRANTS).where(T_GRANTS.c.account_id == acct)).mappings()
        return {r["id"].removeprefix(f"{acct}-"): dict(r) for r in rows}


def _hold(engine: Engine, hold_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(T_HOLDS).where(T_HOLDS.c.id == hold_id)).mappings().one())


def _money_entries(j: Journal) -> list[Entry]:
    return [
        j.entry("e1", "grant", 100, 100, g="@G1:100:100", ng="@G1:p:40:0", src="purchase"),
        j.entry("e2", "charge", -30, 70, g="@G1:-30:70", tool="GPT", q="3", ik="k2"),
        j.entry("e3", "charge", -80, -10, g="@G1:-70:0;debt:-10:-10", tool="GPT", q="8"),
        # debt is paid first: of 15 credits, 10 pay the debt and 5 make the new grant
        j.entry("e4", "adjustment", 15, 5, g="debt:10:0;@G2:5:5", ng="@G2:r:50:0", desc="fix"),
    ]


def test_ledger_entries_move_balance_debt_and_grant_remainders(engine: Engine) -> None:
    j = Journal()
    entries = _money_entries(j)
    assert _write(engine, entries) == WriteResult(ledger_inserted=4)
    assert _wallet(engine, j.account) == (5, 0, 0)
    grants = _grants(engine, j.account)
    assert {g: (r["amount"], r["remaining"]) for g, r in grants.items()} == {
        "G1": (100, 0),
        "G2": (15, 5),
    }
    assert (grants["G1"]["category"], grants["G1"]["priority"]) == ("paid", 40)
    assert (grants["G1"]["source"], grants["G1"]["entry_id"]) == ("purchase", entries[0].id)
    assert (grants["G2"]["category"], grants["G2"]["source"]) == ("promotional", "admin")
    with engine.connect() as conn:
        rows = {
            r["id"]: r
            for r in conn.execute(
                select(T_LEDGER).where(T_LEDGER.c.account_id == j.account)
            ).mappings()
        }
        assert conn.execute(
            select(T_ACCOUNTS.c.id).where(T_ACCOUNTS.c.id == j.account)
        ).scalar_one()
    charge = rows[entries[1].id]
    assert (charge["kind"], charge["amount"], charge["balance_after"]) == ("charge", -30, 70)
    assert (charge["tool"], charge["quantity"], charge["idempotency_key"]) == ("GPT", 3, "k2")
    assert charge["breakdown"] == f"{j.account}-G1:-30:70"
    assert (charge["bucket"], charge["stream_id"]) == (BUCKET, entries[1].sort_id)
    assert rows[entries[3].id]["description"] == "fix"


def test_the_same_entries_written_twice_insert_and_move_once(engine: Engine) -> None:
    j = Journal()
    entries = _money_entries(j)
    _write(engine, entries[:2])
    assert _write(engine, entries) == WriteResult(ledger_inserted=2)  # e1, e2 already there
    wallet, grants = _wallet(engine, j.account), _grants(engine, j.account)
    assert _write(engine, entries) == WriteResult()
    assert _write(engine, entries[1:3]) == WriteResult()
    assert _wallet(engine, j.account) == wallet == (5, 0, 0)
    assert _grants(engine, j.account) == grants
    with engine.connect() as conn:
        ids = conn.execute(select(T_LEDGER.c.id).where(T_LEDGER.c.account_id == j.account))
        assert sorted(ids.scalars()) == sorted(e.id for e in entries)


def test_a_remainder_that_arrives_before_its_grant_is_kept(engine: Engine) -> None:
    """Entries applied out of order (a reclaimed batch after newer ones): remainders move by
    sums, so a charge's delta creates the grant row, and the grant entry describes it."""
    j = Journal()
    grant, charge = _money_entries(j)[:2]
    _write(engine, [charge])
    assert _grants(engine, j.account)["G1"]["remaining"] == -30
    _write(engine, [grant])
    g1 = _grants(engine, j.account)["G1"]
    assert (g1["amount"], g1["remaining"], g1["source"]) == (100, 70, "purchase")
    assert _wallet(engine, j.account) == (70, 0, 0)


def test_a_refund_to_an_expired_grant_creates_its_successor(engine: Engine) -> None:
    j = Journal()
    _write(engine, _money_entries(j)[:2])
    refund = j.entry("r1", "refund", 10, 80, g="@G1:4:74;@S1:6:6", ng="@S1:p:50:0", ref="e2")
    assert _write(engine, [refund]) == WriteResult(ledger_inserted=1)
    grants = _grants(engine, j.account)
    assert (grants["G1"]["remaining"], grants["S1"]["amount"], grants["S1"]["remaining"]) == (
        74,
        6,
        6,
    )
    assert (grants["S1"]["source"], grants["S1"]["reference_id"]) == ("refund", refund.id)
    assert _wallet(engine, j.account) == (80, 0, 0)


def test_hold_events_move_the_hold_and_the_wallets_held_once(engine: Engine) -> None:
    j = Journal()
    opened = j.entry("H", "hold_open", 10, 100, x=str(NOW_MS + 60_000), tool="GPT", q="2", ik="h")
    hold_id = opened.id
    events = [
        opened,
        j.entry("H", "hold_extend", 10, 100, x=str(LATER_MS)),
        j.entry("H", "hold_reduce", 4, 100),
    ]
    assert _write(engine, events) == WriteResult(hold_events_inserted=3)
    hold = _hold(engine, hold_id)
    assert (hold["status"], hold["amount"], hold["expires_at_ms"]) == ("active", 4, LATER_MS)
    assert (hold["tool"], hold["quantity"], hold["idempotency_key"]) == ("GPT", 2, "h")
    assert _wallet(engine, j.account) == (0, 0, 4)

    settled = j.entry("H", "hold_settle", 3, 97, e="@C1")
    assert _write(engine, [*events, settled]) == WriteResult(hold_events_inserted=1)
    hold = _hold(engine, hold_id)
    assert (hold["status"], hold["charged"]) == ("settled", 3)
    assert hold["charge_entry_id"] == f"{j.account}-C1"
    assert _wallet(engine, j.account)[2] == 0
    assert _write(engine, [*events, settled]) == WriteResult()
    assert _hold(engine, hold_id) == hold


def test_released_and_expired_holds_free_what_they_held(engine: Engine) -> None:
    j = Journal()
    x = str(NOW_MS + 60_000)
    opened = [j.entry(h, "hold_open", 5, 100, x=x, tool="GPT") for h in ("A", "B", "C")]
    _write(engine, opened)
    assert _wallet(engine, j.account)[2] == 15
    _write(engine, [j.entry("A", "hold_release", 5, 100), j.entry("B", "hold_expire", 5, 100)])
    assert [_hold(engine, e.id)["status"] for e in opened] == ["released", "expired", "active"]
    assert _wallet(engine, j.account)[2] == 5


def test_the_cursor_only_moves_forward(engine: Engine) -> None:
    journal = f"{account('journal')}:journal"
    with engine.begin() as conn:
        assert read_cursor(conn, journal) is None
        assert advance_cursor(conn, journal, sortable("10-0"), NOW_MS) == sortable("10-0")
        assert advance_cursor(conn, journal, sortable("9-5"), NOW_MS) == sortable("10-0")
        assert advance_cursor(conn, journal, sortable("10-1"), NOW_MS) == sortable("10-1")
    with engine.connect() as conn:
        assert read_cursor(conn, journal) == sortable("10-1")
