"""The PostgreSQL COPY path of sync.writer writes exactly the rows of the statement path.

The same entries are written to the SQL under test and to a private SQLite file (always the
statement path), batch by batch with replays mixed in (a batch written again, batches that
overlap); ledger rows, grants, wallets, holds and accounts must come out identical. Under
TEST_DATABASE_URL=postgresql... that compares the COPY path with the statement path; the
writes on PostgreSQL must have gone through the staging table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, Table, select, text

from meter import Meter, Tool
from meter.keys import Keys
from meter.wire import JournalField as F
from sync.copywrite import STAGE_LEDGER
from sync.db import engine_for
from sync.flush import Flusher
from sync.journal import Entry, parse
from sync.migrate import upgrade
from sync.models import T_ACCOUNTS, T_GRANTS, T_HOLDS, T_LEDGER, T_WALLETS
from sync.writer import WriteResult, write_entries
from tests.meter.helpers import journal_entries
from tests.sync.conftest import account
from tests.sync.test_writer import BUCKET, LATER_MS, NOW_MS, Journal, _money_entries

# Every table the writer changes, with the column naming the account; every value must match.
SNAPSHOTS: list[tuple[Table, str]] = [
    (T_LEDGER, "account_id"),
    (T_GRANTS, "account_id"),
    (T_WALLETS, "account_id"),
    (T_HOLDS, "account_id"),
    (T_ACCOUNTS, "id"),
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A SQLite file of its own: the statement path, the reference."""
    url = f"sqlite:///{tmp_path_factory.mktemp('reference') / 'ref.db'}"
    upgrade(url)
    engine = engine_for(url)
    yield engine
    engine.dispose()


def _write(engine: Engine, entries: list[Entry]) -> tuple[WriteResult, bool]:
    """Writes in one transaction; also says whether the COPY staging table was used."""
    with engine.begin() as conn:
        result = write_entries(conn, BUCKET, entries, NOW_MS)
        staged = conn.dialect.name == "postgresql" and bool(
            conn.execute(text(f"SELECT to_regclass('pg_temp.{STAGE_LEDGER}')")).scalar()
        )
    return result, staged


def _snapshot(engine: Engine, accounts: set[str]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    with engine.connect() as conn:
        for table, owner in SNAPSHOTS:
            rows = conn.execute(select(table).where(table.c[owner].in_(accounts))).mappings()
            out[table.name] = sorted(
                (dict(r) for r in rows), key=lambda r: [str(v) for v in r.values()]
            )
    return out


def _mixed_entries(j: Journal) -> list[Entry]:
    x = str(NOW_MS + 60_000)
    return [
        *_money_entries(j),
        j.entry("r1", "refund", 10, 15, g="@G1:4:4;@S1:6:6", ng="@S1:p:50:0", ref="e2"),
        j.entry("H", "hold_open", 6, 15, x=x, tool="GPT", q="2", ik="h"),
        j.entry("c5", "charge", -20, -5, g="@G2:-5:0;@S1:-6:0;@G1:-4:0;debt:-5:-5", tool="GPT"),
        j.entry("H", "hold_extend", 6, -5, x=str(LATER_MS)),
        j.entry("a6", "adjustment", 9, 4, g="debt:5:0;@G3:4:4", ng="@G3:p:50:0", meta='{"a":1}'),
        j.entry("H", "hold_settle", 2, 2, e="@C1"),
        j.entry("C1", "charge", -2, 2, g="@G3:-2:2", tool="GPT", q="1", hold="@H"),
        # Text the COPY rows must escape (tab, newline, carriage return, backslash), and
        # text outside ASCII: stored as the statement path stores it.
        j.entry(
            "t7",
            "charge",
            -1,
            1,
            g="@G3:-1:1",
            tool="GPT",
            desc="a\tb\nc\rd\\e \\N",
            meta='{"p": "x\\\\y\\tz", "u": "é€"}',
            ref="r\u00e9f\t1",
            ik="k\\1",
        ),
    ]


def test_copy_path_writes_the_rows_of_the_statement_path_replays_included(
    engine: Engine, reference: Engine
) -> None:
    journals = [Journal() for _ in range(3)]
    streams = [_mixed_entries(j) for j in journals]
    entries = [e for group in zip(*streams, strict=True) for e in group]  # interleaved
    on_postgres = engine.dialect.name == "postgresql"
    # Batches as the flush may write them: in order, one written twice, one replayed whole
    # after later ones, and overlapping batches (entries already written among new ones).
    batches = [entries[:7], entries[:7], entries[5:20], entries[:20], entries[18:], entries]
    for batch in batches:
        written, staged = _write(engine, batch)
        expected, _ = _write(reference, batch)
        assert written == expected
        assert staged == on_postgres
    accounts = {j.account for j in journals}
    assert _snapshot(engine, accounts) == _snapshot(reference, accounts)
    with engine.connect() as conn:
        ledger = conn.execute(select(T_LEDGER.c.id).where(T_LEDGER.c.account_id.in_(accounts)))
        assert len(ledger.all()) == 3 * 9  # once each, whatever the replays


def test_a_flush_with_a_replayed_batch_writes_the_rows_of_the_statement_path(
    meter: Meter,
    client: redis.Redis,
    engine: Engine,
    keys: Keys,
    tool: Tool,
    reference: Engine,
) -> None:
    """The flush end to end: a flusher that dies between its commit and XACK leaves its batch
    pending, its heir writes it again with the rest; SQL ends as the statement path leaves
    the same journal written once."""
    accounts = [account("copy"), account("copy")]
    for a in accounts:
        meter.grant(a, "credits", 100, category="paid")
        for _ in range(4):
            meter.charge(a, tool.name)
    with meter.hold(accounts[0], tool.name, amount=9) as h:
        h.settle(6)
    meter.clawback(accounts[1], "credits", 95, reference_id="cb-1")  # beyond its 88: debt
    meter.grant(accounts[1], "credits", 30, category="promotional")  # pays the debt first
    journaled = [
        parse(sid.decode(), fields)
        for b in sorted({keys.bucket(a) for a in accounts})
        for sid, fields in journal_entries(client, keys.journal(b))
        if fields[b"a"].decode() in accounts
    ]
    assert any("debt:" in (e.get(F.BREAKDOWN) or "") for e in journaled)  # debt moved too

    class DiesBeforeAck(Flusher):
        def _ack(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if args[3]:  # a batch's ack, not the final lock release
                raise KeyboardInterrupt("killed between SQL commit and XACK")
            return super()._ack(*args, **kwargs)

    first = DiesBeforeAck(client, engine, keys, consumer="dead-one", batch_max=5)
    with pytest.raises(KeyboardInterrupt):
        first.flush_all()
    first.close()
    for b in keys.all_buckets():
        client.delete(keys.flush_lock(b))  # as if its TTL ran out
    heir = Flusher(client, engine, keys, consumer="heir")
    flushed = heir.flush_all()
    heir.close()
    assert sum(r.reclaimed for r in flushed) >= 5  # the committed batch, written again
    for bucket in {keys.bucket(a) for a in accounts}:
        ours = [e for e in journaled if keys.bucket(e.account_id) == bucket]
        with reference.begin() as conn:
            write_entries(conn, bucket, ours, NOW_MS)
    got, want = _snapshot(engine, set(accounts)), _snapshot(reference, set(accounts))
    for name in ("ledger_entries", "grants", "holds"):
        assert got[name] == want[name], name
    # Wallets and accounts were made by hydration on one side, by the writer on the other:
    # their clocks differ, their amounts may not.
    amounts = ("account_id", "credit_type", "balance", "debt", "held")
    assert [[w[c] for c in amounts] for w in got["wallets"]] == [
        [w[c] for c in amounts] for w in want["wallets"]
    ]
