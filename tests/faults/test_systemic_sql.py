"""Issue 12 item 4: a SQL error that fails every row never dead-letters acknowledged money.

A private PostgreSQL has a ledger column renamed (or a constraint every insert breaks) for a
few seconds while charges come in and the flush keeps trying: the flush fails and retries,
nothing is dead-lettered or trimmed, and once SQL is fixed every acknowledged charge reaches
it exactly once. An entry whose own data SQL refuses is still dead-lettered alone, its
neighbours flush, and `creditmeter deadletters retry` re-drives it once the cause is fixed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner

from cli.main import app
from meter import Meter, Tool
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync import limits
from sync.catalog import save_tools
from sync.db import engine_for
from sync.flush import GROUP, Flusher
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.models import T_DEAD, T_LEDGER
from sync.settings import get_settings
from tests.servers import PrivatePostgres, postgres_available, private_redis
from tests.sync.invariants import assert_in_sync

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

BUCKETS = 4
ACCOUNTS = 6
BROKEN_S = 3.0  # how long SQL refuses every row
FLUSH_PAUSE_S = 0.2  # between the flush attempts while SQL is broken

# Two ways SQL refuses every row: a class the error says is systemic (ProgrammingError), and
# a constraint every insert breaks (IntegrityError, which only the canary tells from one
# entry's bad data).
BREAKS = {
    "renamed-column": (
        "ALTER TABLE ledger_entries RENAME COLUMN description TO description_gone",
        "ALTER TABLE ledger_entries RENAME COLUMN description_gone TO description",
    ),
    "constraint-on-every-insert": (
        "ALTER TABLE ledger_entries ADD CONSTRAINT ck_broken CHECK (created_at_ms < 0) NOT VALID",
        "ALTER TABLE ledger_entries DROP CONSTRAINT ck_broken",
    ),
}


class Setup:
    def __init__(self, client: redis.Redis, engine: Engine) -> None:
        self.client = client
        self.engine = engine
        self.keys = Keys(prefix="s" + uuid.uuid4().hex[:10], buckets=BUCKETS)
        self.tool = Tool(f"T{self.keys.prefix.upper()}", 1, "credits")
        save_tools(engine, [self.tool])
        self.meter = Meter(client, keys=self.keys, loader=SqlLoader(engine, self.keys))
        self.meter.set_tools([self.tool])
        self.accounts = [f"sys-{uuid.uuid4().hex[:8]}-{i}" for i in range(ACCOUNTS)]
        for a in self.accounts:
            self.meter.grant(a, "credits", 1_000_000, category="paid")

    def sql(self, statement: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(statement))

    def dead_letters(self) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(T_DEAD).where(T_DEAD.c.journal.like(f"{self.keys.prefix}:%"))
                ).mappings()
            ]

    def ledger_counts(self, ids: list[str]) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(T_LEDGER.c.id, func.count())
                .where(T_LEDGER.c.id.in_(ids))
                .group_by(T_LEDGER.c.id)
            ).all()
        return {i: n for i, n in rows}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not postgres_available():
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    server = private_redis(tmp_path_factory.mktemp("redis"), appendonly=False)
    redis_url = server.start()
    try:
        with PrivatePostgres() as pg:
            upgrade(pg.url)
            yield redis_url, pg.url
    finally:
        server.stop()


@pytest.fixture
def setup(servers: tuple[str, str]) -> Iterator[Setup]:
    client = sync_client(servers[0])
    try:
        yield Setup(client, engine_for(servers[1]))
    finally:
        client.close()


def _charge_until(setup: Setup, stop: threading.Event, out: list[str]) -> None:
    """Charges round-robin until stopped; every acknowledged charge id goes to `out`."""
    i = 0
    while not stop.is_set():
        a = setup.accounts[i % len(setup.accounts)]
        out.append(setup.meter.charge(a, setup.tool.name, description=f"charge {i}").id)
        i += 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("break_name", sorted(BREAKS))
def test_sql_refusing_every_row_stops_the_flush_and_dead_letters_nothing(
    setup: Setup, break_name: str
) -> None:
    flusher = Flusher(setup.client, setup.engine, setup.keys)
    acknowledged = [setup.meter.charge(a, setup.tool.name).id for a in setup.accounts]
    flusher.flush_all()
    stop = threading.Event()
    charger = threading.Thread(target=_charge_until, args=(setup, stop, acknowledged))
    charger.start()
    breaks, fix = BREAKS[break_name]
    failures: list[Exception] = []
    try:
        time.sleep(0.3)
        setup.sql(breaks)
        deadline = time.monotonic() + BROKEN_S
        while time.monotonic() < deadline:
            try:
                flusher.flush_all()
            except Exception as exc:  # the flush must fail loudly while SQL refuses all
                failures.append(exc)
            time.sleep(FLUSH_PAUSE_S)
        journals_while_broken = sum(
            setup.client.xlen(setup.keys.journal(b)) for b in setup.keys.all_buckets()
        )
        progress = {
            k.decode(): v.decode()
            for k, v in setup.client.hgetall(setup.keys.flush_progress()).items()
        }
    finally:
        setup.sql(fix)
        stop.set()
        charger.join()
    flusher.close()

    assert failures, "the flush went on while SQL refused every row"
    assert setup.dead_letters() == []
    assert journals_while_broken > 0  # nothing trimmed that SQL never got
    assert int(progress["error_at_ms"]) > int(progress["ok_at_ms"])
    assert "\n" not in progress["error"]
    assert len(progress["error"]) <= limits.FLUSH_ERROR_LEN_MAX

    drain_started = time.monotonic()
    assert_in_sync(setup.client, setup.engine, setup.keys)  # drains, then compares
    print(
        f"\n{break_name}: {len(acknowledged)} charges acknowledged, {len(failures)} flush "
        f"attempts refused in {BROKEN_S:.0f} s, {journals_while_broken} entries kept in the "
        f"journal, 0 dead letters, drained in {time.monotonic() - drain_started:.2f} s"
    )
    assert setup.dead_letters() == []
    counts = setup.ledger_counts(acknowledged)
    assert len(acknowledged) > 2 * ACCOUNTS
    assert sorted(counts) == sorted(acknowledged)
    assert set(counts.values()) == {1}
    after = {
        k.decode(): v.decode() for k, v in setup.client.hgetall(setup.keys.flush_progress()).items()
    }
    assert int(after["ok_at_ms"]) >= int(after["error_at_ms"])


@pytest.mark.timeout(90)
def test_an_entry_sql_refuses_alone_is_dead_lettered_and_retried_after_the_fix(
    setup: Setup, servers: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two entries SQL refuses for their own data: a real charge whose description breaks
    a constraint only it breaks (fixed later: its retry goes through), and an entry put in
    the journal by hand with an over-long reference (amount 0: Redis and SQL agree without
    it), which no retry can write and which stays with SQL's answer."""
    a, b = setup.accounts[0], setup.accounts[1]
    setup.sql(
        "ALTER TABLE ledger_entries ADD CONSTRAINT ck_no_forbidden "
        "CHECK (description IS NULL OR description NOT LIKE '%forbidden%')"
    )
    try:
        before = [setup.meter.charge(a, setup.tool.name).id for _ in range(3)]
        refused = setup.meter.charge(a, setup.tool.name, description="a forbidden word")
        after = [setup.meter.charge(a, setup.tool.name).id for _ in range(3)]
        bucket = setup.keys.bucket(b)
        balance = setup.meter.balance(b, ["credits"]).wallet("credits").balance
        oversized = "x" * 300
        setup.client.xadd(
            setup.keys.journal(bucket),
            {
                "id": f"inj-{uuid.uuid4().hex[:12]}",
                "k": "adjustment",
                "a": b,
                "t": "credits",
                "m": "0",
                "b": str(balance),
                "ts": str(int(time.time() * 1000)),
                "ref": oversized,
            },
        )
        neighbour = setup.meter.charge(b, setup.tool.name).id
        flusher = Flusher(setup.client, setup.engine, setup.keys)
        flusher.flush_all()
        flusher.close()

        dead = setup.dead_letters()
        assert sorted(str(d["error"])[:4] for d in dead) == ["sql:", "sql:"]
        assert refused.id in " ".join(str(d["fields"]) for d in dead)
        counts = setup.ledger_counts([*before, *after, neighbour, refused.id])
        assert counts == dict.fromkeys([*before, *after, neighbour], 1)
        for b_ in setup.keys.all_buckets():
            assert setup.client.xpending(setup.keys.journal(b_), GROUP)["pending"] == 0

        for name, value in {
            "CREDITMETER_REDIS_URL": servers[0],
            "CREDITMETER_DATABASE_URL": servers[1],
            "CREDITMETER_KEY_PREFIX": setup.keys.prefix,
            "CREDITMETER_BUCKETS": str(BUCKETS),
            "COLUMNS": "200",
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        cli = CliRunner()
        listed = cli.invoke(app, ["deadletters", "list"])
        assert listed.exit_code == 0, listed.output
        assert refused.id in listed.output and "2 dead letters" in listed.output

        still = cli.invoke(app, ["deadletters", "retry", "--all"])  # cause not fixed yet
        assert still.exit_code == 1, still.output
        assert still.output.count("still refused") == 2
        assert len(setup.dead_letters()) == 2

        # The constraint's cause is fixed; the injected entry's is its own data, for good.
        setup.sql("ALTER TABLE ledger_entries DROP CONSTRAINT ck_no_forbidden")
        retried = cli.invoke(app, ["deadletters", "retry", "--all"])
        assert retried.exit_code == 1, retried.output
        assert retried.output.count("written to SQL, removed") == 1
        assert retried.output.count("still refused") == 1
        left = setup.dead_letters()
        assert len(left) == 1 and oversized in str(left[0]["fields"])
        assert "too long" in str(left[0]["error"])
        assert setup.ledger_counts([refused.id]) == {refused.id: 1}
        one = cli.invoke(app, ["deadletters", "retry", str(left[0]["id"])])
        assert one.exit_code == 1 and "still refused" in one.output
        assert_in_sync(setup.client, setup.engine, setup.keys)
    finally:
        get_settings.cache_clear()
        setup.sql("ALTER TABLE ledger_entries DROP CONSTRAINT IF EXISTS ck_no_forbidden")
