"""Random operation sequences on one or two wallets over a controllable clock; after every
step the ledger invariants must hold:

- the wallet balance equals the sum of its journal's ledger amounts (hold_* kinds are not
  balance changes); grants past their expiry not yet journaled are the only difference
  between the stored wallet and what Meter.balance reports;
- available = balance - held >= -overdraft_limit;
- no expired grant is ever spent (or refunded into): every grant in a spending entry's
  breakdown expires never or after the entry's time;
- refunds of a charge never add up to more than the charge.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from typing import Any

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meter import HoldNotActive, InsufficientCredits, Meter, NewAccountLoader, OverRefund
from tests.meter.helpers import Clock, journal_entries, make_meter

CT = "credits"
TOOL = "GEN"  # cost 1
ACCOUNTS = ("w0", "w1")
LEDGER_KINDS = {"grant", "charge", "refund", "adjustment", "expire", "clawback"}
_examples = itertools.count()

wallets = st.sampled_from(ACCOUNTS)
grants = st.tuples(
    st.just("grant"),
    wallets,
    st.integers(1, 100),
    st.one_of(st.sampled_from([0, 10, 50, 100]), st.integers(0, 100)),
    st.one_of(st.none(), st.integers(1, 30_000)),
    st.sampled_from(["paid", "promotional"]),
)
charges = st.tuples(st.just("charge"), wallets, st.integers(1, 15))
holds = st.tuples(st.just("hold"), wallets, st.integers(0, 20), st.integers(1, 30))
# An index taken modulo the holds (charges) made so far; -1 is the latest one.
picks = st.one_of(st.just(-1), st.integers(0, 50))
operations = st.one_of(
    grants,
    charges,
    holds,
    grants,
    charges,
    holds,
    st.tuples(st.just("settle"), picks, st.one_of(st.none(), st.integers(0, 30))),
    st.tuples(st.just("release"), picks),
    st.tuples(st.just("extend"), picks, st.integers(1, 30)),
    st.tuples(st.just("refund"), picks, st.one_of(st.none(), st.integers(1, 10))),
    st.tuples(st.just("adjust"), wallets, st.integers(-25, 25).filter(lambda a: a != 0)),
    st.tuples(st.just("advance"), st.sampled_from([1, 999, 1000, 5000, 15_000, 30_000])),
    st.tuples(st.just("sweep"), wallets),
)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _parts(g: str) -> list[tuple[str, int, int]]:
    if not g:
        return []
    return [(p[0], int(p[1]), int(p[2])) for p in (item.split(":") for item in g.split(";"))]


class Run:
    """One example: a meter on a fresh prefix, the holds and charges it made."""

    def __init__(self, m: Meter, clock: Clock, r: redis.Redis, overdraft: int) -> None:
        self.m, self.clock, self.r, self.od = m, clock, r, overdraft
        self.holds: list[Any] = []
        self.charges: list[str] = []

    def apply(self, op: tuple[Any, ...]) -> None:
        m, kind = self.m, op[0]
        try:
            if kind == "grant":
                _, acct, amount, prio, exp, cat = op
                m.grant(
                    acct,
                    CT,
                    amount,
                    priority=prio,
                    category=cat,
                    expires_at_ms=None if exp is None else self.clock.now_ms + exp,
                )
            elif kind == "charge":
                self.charges.append(m.charge(op[1], TOOL, op[2]).id)
            elif kind == "hold":
                self.holds.append(m.hold(op[1], TOOL, amount=op[2], ttl_s=op[3]))
            elif kind in ("settle", "release", "extend") and self.holds:
                h = self.holds[op[1] % len(self.holds)]
                if kind == "settle":
                    s = h.settle(op[2])
                    if s.charged > 0:
                        self.charges.append(s.entry_id)
                elif kind == "release":
                    h.release()
                else:
                    h.extend(op[2])
            elif kind == "refund" and self.charges:
                m.refund(self.charges[op[1] % len(self.charges)], op[2])
            elif kind == "adjust":
                m.adjust(op[1], CT, op[2], reason="prop")
            elif kind == "advance":
                self.clock.advance(op[1])
            elif kind == "sweep":
                m.expire_wallet(op[1], CT)
        except (InsufficientCredits, OverRefund, HoldNotActive):
            pass  # refusals are fine; the invariants below say they changed nothing wrong

    def journal(self, account: str) -> list[dict[str, str]]:
        keys = self.m.keys
        out = []
        for _, fields in journal_entries(self.r, keys.journal(keys.bucket(account))):
            e = {_s(k): _s(v) for k, v in fields.items()}
            if e["a"] == account and e["t"] == CT:
                out.append(e)
        return out

    def check(self, account: str, step: int, op: tuple[Any, ...]) -> None:
        now = self.clock.now_ms
        where = f"after step {step} {op} on {account}"
        raw = {_s(k): _s(v) for k, v in self.r.hgetall(self.m.keys.wallet(account, CT)).items()}
        stored, unjournaled_expired, held = -int(raw.get("d", 0)), 0, 0
        for f, v in raw.items():
            if f.startswith("g:"):
                rem, _, exp, _ = v.split("|")
                stored += int(rem)
                if int(exp) != 0 and int(exp) <= now:
                    unjournaled_expired += int(rem)
            elif f.startswith("h:"):
                amount, exp = v.split("|")
                if int(exp) > now:
                    held += int(amount)

        entries = self.journal(account)
        ledger = [e for e in entries if e["k"] in LEDGER_KINDS]
        assert sum(int(e["m"]) for e in ledger) == stored, where
        if ledger:
            assert int(ledger[-1]["b"]) == stored, where

        w = self.m.balance(account, [CT]).wallet(CT)
        assert w is not None
        assert w.balance == stored - unjournaled_expired, where
        # Holds that expired grants no longer cover are clipped to what the wallet can cover
        # (wallet_clip_holds on the next write; the balance read shows the same).
        held = min(held, max(w.balance + self.od, 0))
        assert (w.held, w.available) == (held, w.balance - held), where
        assert w.available >= -self.od, where
        assert w.overdraft_limit == self.od, where

        grant_expiry: dict[str, int] = {}
        charged: dict[str, int] = {}
        refunded: dict[str, int] = defaultdict(int)
        for e in ledger:
            for item in filter(None, e.get("ng", "").split(";")):
                gid, _, _, exp = item.split(":")
                grant_expiry.setdefault(gid, int(exp))
            ps = _parts(e.get("g", ""))
            assert sum(d for _, d, _ in ps) == int(e["m"]), (where, e)
            if e["k"] == "expire":
                continue
            for gid, _, after in ps:
                if gid == "debt":
                    assert after <= 0, (where, e)
                    continue
                assert after >= 0, (where, e)
                exp = grant_expiry[gid]
                assert exp == 0 or exp > int(e["ts"]), f"{where}: expired grant {gid} in {e}"
            if e["k"] == "charge":
                charged[e["id"]] = -int(e["m"])
            elif e["k"] == "refund":
                refunded[e["ref"]] += int(e["m"])
        for charge_id, total in refunded.items():
            assert total <= charged[charge_id], f"{where}: {charge_id} refunded {total}"


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(operations, min_size=20, max_size=40),
    overdraft=st.sampled_from([0, 0, 10]),
    two_wallets=st.booleans(),
    opening=st.integers(0, 60),
)
# Found by a random run: a grant behind an open hold expires and available goes below 0.
@example(
    ops=[
        ("grant", "w0", 1, 0, None, "paid"),
        ("grant", "w0", 4, 0, 1, "paid"),
        ("charge", "w0", 3),
        ("hold", "w0", 2, 1),
        ("advance", 1),
    ],
    overdraft=0,
    two_wallets=False,
    opening=0,
)
def test_random_operation_sequences_keep_the_ledger_invariants(
    redis_url: str,
    redis_sync: redis.Redis,
    key_prefix: str,
    ops: list[tuple[Any, ...]],
    overdraft: int,
    two_wallets: bool,
    opening: int,
) -> None:
    prefix = f"{key_prefix}x{next(_examples)}"
    # Near real time: Redis TTLs of hold records run on Redis's own clock.
    clock = Clock(int(time.time()) * 1000)
    m = make_meter(redis_url, prefix, clock, loader=NewAccountLoader(overdraft_limit=overdraft))
    try:
        m.set_tool(TOOL, 1)
        run = Run(m, clock, redis_sync, overdraft)
        accounts = ACCOUNTS if two_wallets else ACCOUNTS[:1]
        if opening:
            for acct in accounts:
                m.grant(acct, CT, opening, category="paid")
        for step, op in enumerate(ops):
            if not two_wallets and op[0] in ("grant", "charge", "hold", "adjust", "sweep"):
                op = (op[0], ACCOUNTS[0], *op[2:])
            run.apply(op)
            for acct in accounts:
                run.check(acct, step, op)
    finally:
        m.redis.close()
