"""Every return code of every script, called directly by EVALSHA; after every error reply
nothing under the test's key prefix has changed. Each test names the codes it proves with
@covers; test_every_declared_code_of_every_script_is_tested reads the `Output:` of every
script's header (and the codes its includes return) and fails on one no test covers."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import redis

from meter import Keys, ids, scripts, wire
from meter import signatures as sig
from meter.bounds import CREDITS_MAX, HOLD_TTL_S_MAX, IDEM_RESTORE_BATCH_MAX
from meter.errors import Code
from meter.keys import due_member
from tests.meter.helpers import T0_MS, evalsha, snapshot_keys

T = TypeVar("T")
ACCT, CT = "acct", "credits"
NOW = str(T0_MS)
IDEM_TTL = "90000"
BIG = str(CREDITS_MAX + 1)  # 2**53: one above every bound
HUGE = "99999999999999999"  # 17 digits
GROUP = "flush"  # the journals' consumer group (sync.flush.GROUP)

ALL_WRITES = ["charge", "hold", "settle", "release", "extend", "refund", "grant", "adjust"]
CLOCKED = [*ALL_WRITES, "expire", "clawback"]  # every script that changes wallets by the clock

COVERED: defaultdict[str, set[int]] = defaultdict(set)  # script -> codes a test here proves


def covers(names: tuple[str, ...] | list[str], *codes: Code) -> Callable[[T], T]:
    """Records that the decorated test proves `codes` of the scripts `names`."""
    for name in names:
        COVERED[name].update(int(c) for c in codes)
    return lambda test: test


class World:
    """One bucket with a catalog, a 100-credit wallet, an open hold H (10), a released hold
    H2 (10) and a charge C (10) made with idempotency key K1: balance 90, held 10."""

    def __init__(self, r: redis.Redis, prefix: str) -> None:
        self.r, self.prefix, self.k = r, prefix, Keys(prefix=prefix)
        self.touched: set[str] = set()  # every key ever passed to a script
        self.b = self.k.bucket(ACCT)
        self.hold_id, self.hold2_id, self.charge_id = self.id(), self.id(), self.id()
        self.ok(self.call("catalog_set", *self.catalog_args("replace")))
        self.ok(self.call("hydrate", *self.hydrate_wallet_args(ACCT, "g1", "100", "paid")))
        self.ok(self.call("hold", *self.hold_args()))
        self.ok(self.call("hold", *self.hold_args(hold_id=self.hold2_id, idem="h2")))
        self.ok(self.call("release", *self.release_args(hold_id=self.hold2_id, idem="r2")))
        self.ok(self.call("charge", *self.charge_args(entry=self.charge_id, idem="K1")))

    def id(self) -> str:
        return ids.new_id(self.b)

    def call(self, script: str, keys: list[str], args: list[str]) -> Any:
        self.touched.update(keys)
        return evalsha(self.r, script, keys, args)

    @staticmethod
    def ok(reply: list[Any]) -> None:
        code = reply[0][0] if script_is_batch(reply) else reply[0]
        assert code == Code.OK, reply

    def snap(self, *more_keys: str) -> dict[str, Any]:
        self.touched.update(more_keys)
        return snapshot_keys(self.r, self.touched)

    # --- argument builders: valid by default, each slot given by its declared name
    # (meter.signatures); `_patched` replaces one ARGV by name

    def catalog_args(self, mode: str = "merge", bucket: int | None = None) -> tuple[list, list]:
        tools = [
            ("GPT", "10", CT, "1", ""),
            ("OFF", "10", CT, "0", ""),
            ("GEM", "1", "gems", "1", ""),
            ("HUGE", str(CREDITS_MAX), CT, "1", ""),
            ("LIM", "1", CT, "1", "2/60000"),  # 2 a minute per account
        ]
        return _call(
            sig.CATALOG_SET,
            keys={"catalog": self.k.catalog(self.b if bucket is None else bucket)},
            args={
                "mode": mode,
                "tools": [
                    {"tool": t, "cost": c, "credit_type": ct, "active": a, "rate_limit": rl}
                    for t, c, ct, a, rl in tools
                ],
            },
        )

    def hydrate_wallet_args(
        self, account: str, grant_id: str, remaining: str, category: str
    ) -> tuple[list, list]:
        grant = {"grant_id": grant_id, "remaining": remaining, "priority": "50"}
        return _call(
            sig.HYDRATE,
            keys={
                "wallet": self.k.wallet(account, CT),
                "account": self.k.account(account),
                "due": self.k.due(self.b),
                "holds": [],
            },
            args={
                "account_id": account,
                "credit_type": CT,
                "overdraft_limit": "0",
                "status": "active",
                "rate_limits": "",
                "debt": "0",
                "grants": [{**grant, "expires_ms": "0", "category": category}],
                "holds": [],
                "due_member": due_member(account, CT),
                "low_threshold": "",
                "topup_threshold": "",
            },
        )

    def charge_args(
        self,
        tool: str = "GPT",
        qty: str = "1",
        ct: str = CT,
        idem: str | None = None,
        entry: str | None = None,
        fp: str = "fp-charge",
        catalog: int | None = None,
        dry_run: bool = False,
    ) -> tuple[list, list]:
        entry = entry or self.id()
        idem = idem or entry
        k = self.k
        return _call(
            sig.CHARGE,
            keys={
                "catalog": k.catalog(self.b if catalog is None else catalog),
                "journal": k.journal(self.b),
                "charges": [
                    {
                        "wallet": k.wallet(ACCT, ct),
                        "idempotency": k.idempotency(ACCT, idem),
                        "record": k.charge(self.b, entry),
                        "events": k.events(self.b),
                    }
                ],
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "charges": [
                    {
                        "entry_id": "" if dry_run else entry,
                        "account_id": ACCT,
                        "credit_type": ct,
                        "tool": tool,
                        "quantity": qty,
                        "fingerprint": fp,
                        "idempotency_key": idem,
                        "description": "",
                        "metadata": "",
                    }
                ],
            },
        )

    def hold_args(
        self,
        tool: str = "GPT",
        qty: str = "1",
        amount: str = "",
        ct: str = CT,
        hold_id: str | None = None,
        idem: str | None = None,
        fp: str = "fp-hold1",
        catalog: int | None = None,
    ) -> tuple[list, list]:
        hold_id = hold_id or self.hold_id
        idem = idem or hold_id
        k = self.k
        return _call(
            sig.HOLD,
            keys={
                "wallet": k.wallet(ACCT, ct),
                "idempotency": k.idempotency(ACCT, idem),
                "hold": k.hold(self.b, hold_id),
                "catalog": k.catalog(self.b if catalog is None else catalog),
                "journal": k.journal(self.b),
                "due": k.due(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "hold_id": hold_id,
                "account_id": ACCT,
                "credit_type": ct,
                "tool": tool,
                "quantity": qty,
                "amount": amount,
                "ttl_s": "300",
                "fingerprint": fp,
                "idempotency_key": idem,
                "due_member": due_member(ACCT, ct),
            },
        )

    def settle_args(
        self,
        amount: str = "",
        hold_id: str | None = None,
        ct: str = CT,
        idem: str = "s1",
        fp: str = "fp-settle",
    ) -> tuple[list, list]:
        hold_id, entry, k = hold_id or self.hold_id, self.id(), self.k
        return _call(
            sig.SETTLE,
            keys={
                "hold": k.hold(self.b, hold_id),
                "wallet": k.wallet(ACCT, ct),
                "idempotency": k.idempotency(ACCT, idem),
                "journal": k.journal(self.b),
                "record": k.charge(self.b, entry),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "hold_id": hold_id,
                "entry_id": entry,
                "account_id": ACCT,
                "credit_type": ct,
                "amount": amount,
                "fingerprint": fp,
                "idempotency_key": idem,
                "description": "",
                "metadata": "",
            },
        )

    def release_args(
        self, hold_id: str | None = None, ct: str = CT, idem: str = "r1", fp: str = "fp-release"
    ) -> tuple[list, list]:
        hold_id, k = hold_id or self.hold_id, self.k
        return _call(
            sig.RELEASE,
            keys={
                "hold": k.hold(self.b, hold_id),
                "wallet": k.wallet(ACCT, ct),
                "idempotency": k.idempotency(ACCT, idem),
                "journal": k.journal(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "hold_id": hold_id,
                "account_id": ACCT,
                "credit_type": ct,
                "fingerprint": fp,
                "idempotency_key": idem,
            },
        )

    def extend_args(
        self,
        hold_id: str | None = None,
        ct: str = CT,
        idem: str = "x1",
        fp: str = "fp-extend",
        ttl_s: str = "600",
    ) -> tuple[list, list]:
        hold_id, k = hold_id or self.hold_id, self.k
        return _call(
            sig.EXTEND,
            keys={
                "hold": k.hold(self.b, hold_id),
                "wallet": k.wallet(ACCT, ct),
                "idempotency": k.idempotency(ACCT, idem),
                "journal": k.journal(self.b),
                "due": k.due(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "hold_id": hold_id,
                "account_id": ACCT,
                "credit_type": ct,
                "ttl_s": ttl_s,
                "fingerprint": fp,
                "idempotency_key": idem,
                "due_member": due_member(ACCT, ct),
            },
        )

    def refund_args(
        self,
        amount: str = "",
        charge_id: str | None = None,
        ct: str = CT,
        idem: str = "f1",
        fp: str = "fp-refund",
    ) -> tuple[list, list]:
        entry, k = self.id(), self.k
        # The world's charge has its own key: its record is there (its charge key points to it).
        record = k.charge(self.b, charge_id) if charge_id else k.idempotency(ACCT, "K1")
        charge_id = charge_id or self.charge_id
        return _call(
            sig.REFUND,
            keys={
                "record": record,
                "wallet": k.wallet(ACCT, ct),
                "idempotency": k.idempotency(ACCT, idem),
                "journal": k.journal(self.b),
                "due": k.due(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "entry_id": entry,
                "charge_id": charge_id,
                "account_id": ACCT,
                "credit_type": ct,
                "amount": amount,
                "successor_paid": self.id(),
                "successor_promotional": self.id(),
                "fingerprint": fp,
                "idempotency_key": idem,
                "reason": "",
                "metadata": "",
                "due_member": due_member(ACCT, ct),
            },
        )

    def grant_args(
        self,
        amount: str = "5",
        ct: str = CT,
        grant_id: str | None = None,
        idem: str = "g1",
        fp: str = "fp-grant",
    ) -> tuple[list, list]:
        entry, k = self.id(), self.k
        return _call(
            sig.GRANT,
            keys={
                "wallet": k.wallet(ACCT, ct),
                "idempotency": k.idempotency(ACCT, idem),
                "journal": k.journal(self.b),
                "due": k.due(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "entry_id": entry,
                "grant_id": grant_id or entry,
                "account_id": ACCT,
                "credit_type": ct,
                "amount": amount,
                "category": "paid",
                "priority": "50",
                "expires_ms": "0",
                "source": "admin",
                "reference_id": "",
                "fingerprint": fp,
                "idempotency_key": idem,
                "description": "",
                "metadata": "",
                "due_member": due_member(ACCT, ct),
            },
        )

    def adjust_args(
        self, amount: str = "-5", ct: str = CT, idem: str = "a1", fp: str = "fp-adjust"
    ) -> tuple[list, list]:
        entry, k = self.id(), self.k
        return _call(
            sig.ADJUST,
            keys={
                "wallet": k.wallet(ACCT, ct),
                "idempotency": k.idempotency(ACCT, idem),
                "journal": k.journal(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "idempotency_ttl_s": IDEM_TTL,
                "entry_id": entry,
                "grant_id": entry,
                "account_id": ACCT,
                "credit_type": ct,
                "amount": amount,
                "category": "promotional",
                "fingerprint": fp,
                "idempotency_key": idem,
                "reason": "fix",
                "metadata": "",
            },
        )

    def expire_args(self) -> tuple[list, list]:
        k = self.k
        return _call(
            sig.EXPIRE,
            keys={
                "wallet": k.wallet(ACCT, CT),
                "journal": k.journal(self.b),
                "due": k.due(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "account_id": ACCT,
                "credit_type": CT,
                "due_member": due_member(ACCT, CT),
            },
        )

    def hydrate_args(self, account: str = "other") -> tuple[list, list]:
        return self.hydrate_wallet_args(account, "g9", "7", "promotional")

    def account_set_args(
        self, status: str = "suspended", overdraft_limit: str = "0", rate_limits: str = ""
    ) -> tuple[list, list]:
        return _call(
            sig.ACCOUNT_SET,
            keys={
                "account": self.k.account(ACCT),
                "wallets": [{"wallet": self.k.wallet(ACCT, ct)} for ct in (CT, "gems")],
            },
            args={
                "account_id": ACCT,
                "overdraft_limit": overdraft_limit,
                "status": status,
                "rate_limits": rate_limits,
            },
        )

    def threshold_set_args(
        self, kind: str = "low", threshold: str = "50", ct: str = CT
    ) -> tuple[list, list]:
        return _call(
            sig.THRESHOLD_SET,
            keys={"account": self.k.account(ACCT), "wallet": self.k.wallet(ACCT, ct)},
            args={"account_id": ACCT, "credit_type": ct, "kind": kind, "threshold": threshold},
        )

    def clawback_args(
        self,
        target: str = "5",
        known: str = "0",
        grant_id: str = "g1",
        ct: str = CT,
        ref: str = "pi_1",
    ) -> tuple[list, list]:
        k = self.k
        return _call(
            sig.CLAWBACK,
            keys={
                "wallet": k.wallet(ACCT, ct),
                "clawed": k.clawed(ACCT, ref),
                "journal": k.journal(self.b),
                "events": k.events(self.b),
            },
            args={
                "now_ms": NOW,
                "entry_id": self.id(),
                "account_id": ACCT,
                "credit_type": ct,
                "target": target,
                "known": known,
                "grant_id": grant_id,
                "reference_id": ref,
                "reason": "refund",
                "metadata": "",
            },
        )

    def args(self, script: str, **kw: Any) -> tuple[list, list]:
        builder: Callable[..., tuple[list, list]] = getattr(self, f"{script}_args")
        return builder(**kw)


def script_is_batch(reply: list[Any]) -> bool:
    return isinstance(reply[0], list)


def _code(reply: list[Any]) -> int:
    return int(reply[0][0] if script_is_batch(reply) else reply[0])


@pytest.fixture
def w(redis_sync: redis.Redis, key_prefix: str) -> World:
    return World(redis_sync, key_prefix)


def expect_unchanged(
    w: World, script: str, keys: list[str], args: list[str], code: Code
) -> list[Any]:
    before = w.snap(*keys)
    reply = w.call(script, keys, args)
    assert _code(reply) == code, reply
    assert w.snap() == before
    return reply[0] if script_is_batch(reply) else reply


def _call(
    signature: sig.Signature,
    keys: dict[str, str | list[dict[str, str]]],
    args: dict[str, str | list[dict[str, str]]],
) -> tuple[list, list]:
    return signature.key_list(**keys), signature.arg_list(**args)


def _index(script: str, name: str, item: int = 0) -> int:
    """0-based ARGV position of `name` (of the item-th entry of its group) in a call."""
    args = sig.ALL[script].args
    pos = 0
    for slot in args:
        if isinstance(slot, sig.Group):
            if slot.counted and name == slot.name:
                return pos
            pos += slot.counted
            if name in slot.fields:
                return pos + item * len(slot.fields) + slot.fields.index(name)
            pos += len(slot.fields)  # calls here carry one item of a group before `name`
        elif slot == name:
            return pos
        else:
            pos += 1
    raise KeyError(name)


def _patched(script: str, args: list[str], name: str, value: str, item: int = 0) -> list[str]:
    out = list(args)
    out[_index(script, name, item)] = value
    return out


def _key(script: str, keys: list[str], name: str) -> str:
    return keys[sig.flat_names(sig.ALL[script].keys).index(name)]


# --- BAD_ARGUMENT: malformed ARGV ---------------------------------------------------------

NUMBERS = ["10.0", "1e3", "-1", "", " 1", "0x10", BIG, HUGE, "1\n"]
ACCOUNTS = ["", "a b", "x" * 129, "ü", "a/b"]
CREDIT_TYPES = ["", "Credits", "c" * 33, "a-b"]
IDS = ["", "a b", "x" * 65, "ü"]
COMMON = ALL_WRITES  # each has now, idempotency ttl, account, credit type, fingerprint, key


def _common_cases() -> list[Any]:
    out = []
    for script in COMMON:
        bad = [("now_ms", v, "now_ms") for v in NUMBERS]
        bad += [
            ("idempotency_ttl_s", v, "idempotency_ttl_s") for v in [*NUMBERS, "86399", "2592001"]
        ]
        bad += [("account_id", v, "account_id") for v in ACCOUNTS]
        bad += [("credit_type", v, "credit_type") for v in CREDIT_TYPES]
        bad += [("fingerprint", v, "fingerprint") for v in ["", "1234567", "f" * 65]]
        bad += [("idempotency_key", v, "idempotency_key") for v in ["", "k" * 256]]
        out += [pytest.param(script, n, v, f, id=f"{script}-{n}-{v!r:.12}") for n, v, f in bad]
    return out


# Malformed account rate limits ("TOOL:count:period_ms;...", lua/includes/rate_overrides).
BAD_RATE_OVERRIDES = [
    "LIM",
    "LIM:2",
    "lim:2:60000",
    "LIM:-1:60000",
    "LIM:2:0",
    "LIM:2:3600001",
    "LIM:1000001:1000",
    "LIM:2:60000;",
    "LIM:2:60000:1",
    ";".join(f"T{i}:1:1000" for i in range(33)),
]
SPECIFIC = [  # (script, ARGV name, bad value, field)
    *[("charge", "entry_id", v, "entry_id") for v in IDS if v],  # "": a dry run
    *[("charge", "tool", v, "tool") for v in ["", "gpt", "G" * 65, "GPT-4"]],
    *[("charge", "quantity", v, "quantity") for v in [*NUMBERS, "0", "1000000001"]],
    ("charge", "description", "d" * 1025, "description"),
    ("charge", "metadata", "m" * 4097, "metadata"),
    ("charge", "metadata", "\u20ac" * 1366, "metadata"),
    *[("hold", "hold_id", v, "hold_id") for v in IDS],
    ("hold", "tool", "gpt", "tool"),
    *[("hold", "quantity", v, "quantity") for v in [*NUMBERS, "0", "1000000001"]],
    *[("hold", "amount", v, "amount") for v in ["10.0", "1e3", "-1", BIG, HUGE]],
    *[("hold", "ttl_s", v, "ttl_seconds") for v in [*NUMBERS, "0", "86401"]],
    *[("settle", "hold_id", v, "hold_id") for v in IDS],
    *[("settle", "entry_id", v, "entry_id") for v in IDS],
    *[("settle", "amount", v, "amount") for v in ["10.0", "1e3", "-1", BIG, HUGE]],
    ("settle", "description", "d" * 1025, "description"),
    ("settle", "metadata", "m" * 4097, "metadata"),
    ("settle", "metadata", "\u20ac" * 1366, "metadata"),
    *[("release", "hold_id", v, "hold_id") for v in IDS],
    *[("extend", "hold_id", v, "hold_id") for v in IDS],
    *[("extend", "ttl_s", v, "ttl_seconds") for v in [*NUMBERS, "0", "86401"]],
    *[
        ("refund", n, v, "id")
        for n in ("entry_id", "charge_id", "successor_paid", "successor_promotional")
        for v in IDS
    ],
    *[("refund", "amount", v, "amount") for v in ["10.0", "1e3", "-1", "0", BIG, HUGE]],
    ("refund", "reason", "r" * 1025, "reason"),
    ("refund", "metadata", "m" * 4097, "metadata"),
    ("refund", "metadata", "\u20ac" * 1366, "metadata"),
    *[("grant", "entry_id", v, "entry_id") for v in IDS],
    *[("grant", "grant_id", v, "grant_id") for v in [*IDS, "debt"]],
    *[("grant", "amount", v, "amount") for v in [*NUMBERS, "0"]],
    *[("grant", "category", v, "category") for v in ["", "p", "Paid", "gift"]],
    *[("grant", "priority", v, "priority") for v in [*NUMBERS, "101"]],
    *[("grant", "expires_ms", v, "expires_at") for v in [*NUMBERS, "1", NOW]],
    *[("grant", "source", v, "source") for v in ["", "s" * 33]],
    ("grant", "reference_id", "r" * 256, "reference_id"),
    ("grant", "description", "d" * 1025, "description"),
    ("grant", "metadata", "m" * 4097, "metadata"),
    ("grant", "metadata", "\u20ac" * 1366, "metadata"),
    *[("adjust", "entry_id", v, "entry_id") for v in IDS],
    *[("adjust", "grant_id", v, "grant_id") for v in [*IDS, "debt"]],
    *[
        ("adjust", "amount", v, "amount")
        for v in ["10.0", "1e3", "", "0", "-0", "--1", "-", BIG, "-" + BIG, HUGE]
    ],
    *[("adjust", "category", v, "category") for v in ["", "gift"]],
    *[("adjust", "reason", v, "reason") for v in ["", "r" * 1025]],
    ("adjust", "metadata", "m" * 4097, "metadata"),
    ("adjust", "metadata", "\u20ac" * 1366, "metadata"),
    *[("expire", "now_ms", v, "now_ms") for v in NUMBERS],
    *[("expire", "account_id", v, "account_id") for v in ACCOUNTS],
    *[("expire", "credit_type", v, "credit_type") for v in CREDIT_TYPES],
    *[("hydrate", "account_id", v, "account_id") for v in ACCOUNTS],
    *[("hydrate", "credit_type", v, "credit_type") for v in CREDIT_TYPES],
    *[("hydrate", n, v, "wallet") for n in ("overdraft_limit", "debt") for v in NUMBERS],
    *[("hydrate", "grants", v, "wallet") for v in [*NUMBERS, "1001"]],
    *[("hydrate", "status", v, "status") for v in ["", "Active", "closed"]],
    *[("account_set", "account_id", v, "account_id") for v in ACCOUNTS],
    *[("account_set", "overdraft_limit", v, "overdraft_limit") for v in NUMBERS],
    *[("account_set", "status", v, "status") for v in ["", "Suspended", "closed"]],
    *[("account_set", "rate_limits", v, "rate_limits") for v in BAD_RATE_OVERRIDES],
    *[("hydrate", "rate_limits", v, "rate_limits") for v in BAD_RATE_OVERRIDES],
    *[("threshold_set", "account_id", v, "account_id") for v in ACCOUNTS],
    *[("threshold_set", "credit_type", v, "credit_type") for v in CREDIT_TYPES],
    *[("threshold_set", "kind", v, "kind") for v in ["", "Low", "high"]],
    *[("threshold_set", "threshold", v, "threshold") for v in [*NUMBERS[:3], "0", BIG]],
    *[("hydrate", "grant_id", v, "grant") for v in IDS],
    *[("hydrate", "remaining", v, "grant") for v in [*NUMBERS, "0"]],
    *[("hydrate", "priority", v, "grant") for v in [*NUMBERS, "101"]],
    *[("hydrate", "expires_ms", v, "grant") for v in NUMBERS],
    *[("hydrate", "category", v, "grant") for v in ["", "p", "gift"]],
    *[("hydrate", "holds", v, "holds") for v in [*NUMBERS, "1", "1001"]],
    *[("clawback", "now_ms", v, "now_ms") for v in NUMBERS],
    *[("clawback", "entry_id", v, "entry_id") for v in IDS],
    *[("clawback", "account_id", v, "account_id") for v in ACCOUNTS],
    *[("clawback", "credit_type", v, "credit_type") for v in CREDIT_TYPES],
    *[("clawback", "target", v, "target") for v in NUMBERS],
    *[("clawback", "known", v, "known") for v in NUMBERS],
    *[("clawback", "grant_id", v, "grant_id") for v in IDS[1:]],  # '' is "no grant first"
    *[("clawback", "reference_id", v, "reference_id") for v in ["", "r" * 256]],
    ("clawback", "reason", "r" * 1025, "reason"),
    ("clawback", "metadata", "m" * 4097, "metadata"),
    ("clawback", "metadata", "\u20ac" * 1366, "metadata"),
]


@covers(sorted({*COMMON, *(case[0] for case in SPECIFIC)}), Code.BAD_ARGUMENT)
@pytest.mark.parametrize(
    ("script", "name", "value", "field"),
    [
        *_common_cases(),
        *[pytest.param(*case, id=f"{case[0]}-{case[1]}-{case[2]!r:.12}") for case in SPECIFIC],
    ],
)
def test_malformed_argv_is_bad_argument_and_changes_nothing(
    w: World, script: str, name: str, value: str, field: str
) -> None:
    keys, args = w.hydrate_args() if script == "hydrate" else w.args(script)
    reply = expect_unchanged(
        w, script, keys, _patched(script, args, name, value), Code.BAD_ARGUMENT
    )
    assert reply[1] == field.encode()


def _hydrate_with_hold(w: World, hold: list[str], n_hold_keys: int = 1) -> tuple[list, list]:
    """hydrate_args with one hold given as raw ARGV (malformed on purpose) and n record keys."""
    keys, args = w.hydrate_args()
    count = _index("hydrate", "holds")
    assert args[count:] == ["0", due_member("other", CT), "", ""]
    return (
        [*keys, *[w.k.hold(w.b, w.id()) for _ in range(n_hold_keys)]],
        [*args[:count], "1", *hold, *args[count + 1 :]],
    )


@pytest.mark.parametrize(
    ("hold", "n_keys", "field"),
    [
        (["hid", "5", str(T0_MS + 1000), "GPT"], 0, "holds"),  # a hold without its record key
        (["hid", "5", str(T0_MS + 1000), "GPT"], 2, "holds"),
        (["hid", "5", str(T0_MS + 1000)], 1, "holds"),  # ARGV one short
        (["a b", "5", str(T0_MS + 1000), "GPT"], 1, "hold"),
        (["hid", "1.5", str(T0_MS + 1000), "GPT"], 1, "hold"),
        (["hid", "5", "1e13", "GPT"], 1, "hold"),
        (["hid", "5", str(T0_MS + 1000), "gpt"], 1, "hold"),
    ],
)
def test_hydrate_rejects_malformed_holds(
    w: World, hold: list[str], n_keys: int, field: str
) -> None:
    reply = expect_unchanged(w, "hydrate", *_hydrate_with_hold(w, hold, n_keys), Code.BAD_ARGUMENT)
    assert reply[1] == field.encode()


@covers(("catalog_set",), Code.BAD_ARGUMENT)
@pytest.mark.parametrize(
    ("name", "item", "value", "field"),
    [
        ("mode", 0, "upsert", "mode"),
        ("mode", 0, "", "mode"),
        ("tool", 0, "gpt", "tool"),
        ("cost", 0, "1.5", "cost"),
        ("cost", 0, "-1", "cost"),
        ("cost", 0, BIG, "cost"),
        ("cost", 0, "", "cost"),
        ("credit_type", 0, "Gems", "credit_type"),
        ("active", 0, "yes", "active"),
        ("active", 0, "", "active"),
        ("tool", 3, "huge", "tool"),  # the 4th tool
        *[
            ("rate_limit", 0, v, "rate_limit")
            for v in ["60/minute", "60", "0/1000", "1/0", "1/1000/1", "/1000", "1/", "1/3600001"]
        ],
        ("rate_limit", 0, "1000001/1000", "rate_limit"),
    ],
)
def test_catalog_set_rejects_malformed_tools_and_writes_nothing(
    w: World, name: str, item: int, value: str, field: str
) -> None:
    keys, args = w.catalog_args("replace")
    reply = expect_unchanged(
        w, "catalog_set", keys, _patched("catalog_set", args, name, value, item), Code.BAD_ARGUMENT
    )
    assert reply[1] == field.encode()


def test_catalog_set_rejects_an_incomplete_tool(w: World) -> None:
    keys, args = w.catalog_args("replace")
    reply = expect_unchanged(w, "catalog_set", keys, args[:-1], Code.BAD_ARGUMENT)
    assert reply[1] == b"tools"


@covers(("balance",), Code.BAD_ARGUMENT)
@pytest.mark.parametrize("now", ["-1", "1e3", "", BIG])
def test_balance_rejects_a_malformed_clock(w: World, now: str) -> None:
    reply = expect_unchanged(w, "balance", [w.k.wallet(ACCT, CT)], [now], Code.BAD_ARGUMENT)
    assert reply == [Code.BAD_ARGUMENT, b"now_ms"]


KEY_HEAD, ARG_HEAD = sig.CHARGE.key_head, sig.CHARGE.arg_head  # shared by a batch's charges


def _batch(w: World, n: int) -> tuple[list, list]:
    keys, args = w.charge_args()
    for _ in range(n - 1):
        more_keys, more_args = w.charge_args()
        keys += more_keys[KEY_HEAD:]
        args += more_args[ARG_HEAD:]
    return keys, args


@covers(("charge",), Code.BAD_ARGUMENT)
@pytest.mark.parametrize(
    "shape",
    [
        "no charge",
        "keys not 5 per charge",
        "argv one short",
        "argv one long",
        "keys for 2 argv for 1",
        "257 charges",
    ],
)
def test_charge_batch_of_wrong_shape_is_refused_whole(w: World, shape: str) -> None:
    one_keys, one_args = w.charge_args()
    two_keys, _ = _batch(w, 2)
    keys, args = {
        "no charge": (one_keys[:KEY_HEAD], one_args[:ARG_HEAD]),
        "keys not 5 per charge": (one_keys[:-1], one_args),
        "argv one short": (one_keys, one_args[:-1]),
        "argv one long": (one_keys, [*one_args, ""]),
        "keys for 2 argv for 1": (two_keys, one_args),
        "257 charges": _batch(w, 257),
    }[shape]
    reply = expect_unchanged(w, "charge", keys, args, Code.BAD_ARGUMENT)
    assert reply == [Code.BAD_ARGUMENT, b"batch"]


def test_a_batch_of_256_charges_is_accepted(w: World) -> None:
    w.ok(w.call("grant", *w.grant_args(amount="10000")))
    replies = w.call("charge", *_batch(w, 256))
    assert [r[0] for r in replies] == [Code.OK] * 256


def test_each_charge_of_a_batch_fails_alone(w: World) -> None:
    keys, args = _batch(w, 3)
    args[_index("charge", "tool", item=1)] = "NOPE"  # the second charge's tool
    replies = w.call("charge", keys, args)
    assert [r[0] for r in replies] == [Code.OK, Code.UNKNOWN_TOOL, Code.OK]
    assert replies[2][3] == 70  # 90 - 10 - 10


# --- BAD_ARGUMENT: well-formed but wrong ------------------------------------------------


def test_hold_of_another_account_or_credit_type_is_bad_argument(w: World) -> None:
    w.r.hset(w.k.hold(w.b, w.hold2_id), mapping={"a": "someone"})
    for script in ("settle", "release", "extend"):
        reply = expect_unchanged(w, script, *w.args(script, hold_id=w.hold2_id), Code.BAD_ARGUMENT)
        assert reply[1] == b"hold_id"


def test_refund_of_a_charge_of_another_credit_type_is_bad_argument(w: World) -> None:
    keys, args = w.refund_args()
    reply = expect_unchanged(
        w, "refund", keys, _patched("refund", args, "credit_type", "gems"), Code.BAD_ARGUMENT
    )
    assert reply[1] == b"charge_id"


@covers(("grant",), Code.GRANT_EXISTS)
def test_grant_with_an_existing_grant_id_is_grant_exists(w: World) -> None:
    expect_unchanged(w, "grant", *w.grant_args(grant_id="g1"), Code.GRANT_EXISTS)


def test_hold_with_an_id_already_used_is_bad_argument(w: World) -> None:
    reply = expect_unchanged(
        w, "hold", *w.hold_args(hold_id=w.hold2_id, idem="new"), Code.BAD_ARGUMENT
    )
    assert reply[1] == b"hold_id"


# --- load codes ----------------------------------------------------------------------------


@covers((*ALL_WRITES, "clawback"), Code.NOT_LOADED)
def test_missing_wallet_is_not_loaded_never_zero(w: World) -> None:
    gem_hold, gem_charge = w.id(), w.id()
    w.r.hset(
        w.k.hold(w.b, gem_hold),
        mapping={"a": ACCT, "t": "gems", "s": "active", "tool": "GEM", "m": "1", "x": "1"},
    )
    w.r.set(w.k.charge(w.b, gem_charge), f"{ACCT}\x1fgems\x1fGEM\x1f1\x1f0\x1fgx:1:50:0:p")
    calls = [
        ("charge", w.charge_args(tool="GEM", ct="gems")),
        ("hold", w.hold_args(tool="GEM", ct="gems", hold_id=gem_hold + "0")),
        ("settle", w.settle_args(hold_id=gem_hold, ct="gems")),
        ("release", w.release_args(hold_id=gem_hold, ct="gems")),
        ("extend", w.extend_args(hold_id=gem_hold, ct="gems")),
        ("refund", w.refund_args(charge_id=gem_charge, ct="gems")),
        ("grant", w.grant_args(ct="gems")),
        ("adjust", w.adjust_args(ct="gems")),
        ("adjust", w.adjust_args(amount="5", ct="gems")),
        ("clawback", w.clawback_args(ct="gems")),
    ]
    for script, (keys, args) in calls:
        assert expect_unchanged(w, script, keys, args, Code.NOT_LOADED) == [Code.NOT_LOADED]


@covers(("balance",), Code.OK, Code.NOT_LOADED)
def test_balance_answers_not_loaded_per_wallet(w: World) -> None:
    before = w.snap(w.k.wallet(ACCT, "gems"))
    replies = w.call("balance", [w.k.wallet(ACCT, "gems"), w.k.wallet(ACCT, CT)], [NOW])
    assert replies[0] == [Code.NOT_LOADED]
    assert replies[1][:6] == [Code.OK, 90, 80, 10, 0, 0]
    assert replies[1][6] == [b"g1", 90, 50, 0, b"p"]
    assert w.snap() == before


@covers(("charge", "hold"), Code.CATALOG_NOT_LOADED)
@pytest.mark.parametrize("script", ["charge", "hold"])
def test_missing_catalog_replica_is_catalog_not_loaded(w: World, script: str) -> None:
    other = (w.b + 1) % w.k.buckets
    extra = {"hold_id": w.id()} if script == "hold" else {}
    keys, args = w.args(script, catalog=other, **extra)
    assert expect_unchanged(w, script, keys, args, Code.CATALOG_NOT_LOADED) == [
        Code.CATALOG_NOT_LOADED
    ]


def test_an_empty_catalog_is_loaded_and_the_tool_unknown(w: World) -> None:
    other = (w.b + 1) % w.k.buckets
    w.ok(w.call("catalog_set", [w.k.catalog(other)], ["replace"]))
    reply = expect_unchanged(w, "charge", *w.charge_args(catalog=other), Code.UNKNOWN_TOOL)
    assert reply == [Code.UNKNOWN_TOOL, b"GPT"]


# --- tool codes ----------------------------------------------------------------------------


@covers(("charge", "hold"), Code.UNKNOWN_TOOL, Code.TOOL_DISABLED, Code.CREDIT_TYPE_MISMATCH)
@pytest.mark.parametrize("script", ["charge", "hold"])
@pytest.mark.parametrize(
    ("tool", "code", "detail"),
    [
        ("NOPE", Code.UNKNOWN_TOOL, b"NOPE"),
        ("OFF", Code.TOOL_DISABLED, b"OFF"),
        ("GEM", Code.CREDIT_TYPE_MISMATCH, b"gems"),
    ],
)
def test_tool_codes(w: World, script: str, tool: str, code: Code, detail: bytes) -> None:
    keys, args = w.args(script, tool=tool, **({"hold_id": w.id()} if script == "hold" else {}))
    assert expect_unchanged(w, script, keys, args, code) == [code, detail]


# --- account codes -------------------------------------------------------------------------


@covers(("account_set",), Code.OK)
def test_account_set_updates_every_loaded_wallet_and_the_account_key(w: World) -> None:
    keys, args = w.account_set_args("suspended", "25")
    assert w.call("account_set", keys, args) == [Code.OK, 1]  # no gems wallet is loaded
    assert w.r.hmget(w.k.wallet(ACCT, CT), "o", "s") == [b"25", b"1"]
    assert not w.r.exists(w.k.wallet(ACCT, "gems"))
    assert w.r.hgetall(w.k.account(ACCT)) == {b"o": b"25", b"s": b"suspended"}
    assert w.call("account_set", *w.account_set_args("active", "0")) == [Code.OK, 1]
    assert w.r.hmget(w.k.wallet(ACCT, CT), "o", "s") == [b"0", None]


def test_account_set_writes_and_removes_the_accounts_own_rate_limits(w: World) -> None:
    w.ok(w.call("account_set", *w.account_set_args("active", "0", "LIM:3:60000")))
    assert w.r.hget(w.k.wallet(ACCT, CT), "r") == b"LIM:3:60000"
    assert w.r.hget(w.k.account(ACCT), "r") == b"LIM:3:60000"
    w.ok(w.call("account_set", *w.account_set_args("active", "0", "")))
    assert w.r.hget(w.k.wallet(ACCT, CT), "r") is None
    assert w.r.hget(w.k.account(ACCT), "r") is None


@covers(("threshold_set",), Code.OK)
def test_threshold_set_updates_a_loaded_wallet_and_the_account_key(w: World) -> None:
    assert w.call("threshold_set", *w.threshold_set_args("low", "50")) == [Code.OK, 1]
    assert w.call("threshold_set", *w.threshold_set_args("topup", "20")) == [Code.OK, 1]
    assert w.r.hmget(w.k.wallet(ACCT, CT), "lt", "tt") == [b"50", b"20"]
    assert w.call("threshold_set", *w.threshold_set_args("low", "9", ct="gems")) == [Code.OK, 0]
    assert not w.r.exists(w.k.wallet(ACCT, "gems"))  # a wallet is never made here
    assert w.call("threshold_set", *w.threshold_set_args("low", "")) == [Code.OK, 1]
    assert w.r.hmget(w.k.wallet(ACCT, CT), "lt", "tt") == [None, b"20"]
    assert w.r.hgetall(w.k.account(ACCT)) == {
        b"lt:credits": b"",
        b"tt:credits": b"20",
        b"lt:gems": b"9",
    }


def _with_thresholds(call: tuple[list, list], low: str, topup: str) -> tuple[list, list]:
    """hydrate_args with these thresholds (its last two ARGV, after the holds)."""
    keys, args = call
    return keys, [*args[:-2], low, topup]


@pytest.mark.parametrize("value", ["-1", "0", "1.5", " 1", BIG])
@pytest.mark.parametrize("which", ["low", "topup"])
def test_hydrate_refuses_a_malformed_threshold_and_changes_nothing(
    w: World, which: str, value: str
) -> None:
    low, topup = (value, "") if which == "low" else ("", value)
    keys, args = _with_thresholds(w.hydrate_args(), low, topup)
    assert expect_unchanged(w, "hydrate", keys, args, Code.BAD_ARGUMENT)[1] == b"threshold"


def test_hydrate_takes_thresholds_set_after_its_sql_read(w: World) -> None:
    keys, args = _with_thresholds(w.hydrate_args("other"), "30", "10")
    w.r.hset(w.k.account("other"), mapping={"lt:credits": "", "tt:credits": "15"})
    assert w.call("hydrate", keys, args) == [Code.OK, 1]
    assert w.r.hmget(w.k.wallet("other", CT), "lt", "tt") == [None, b"15"]


def test_hydrate_writes_the_thresholds_sql_gave(w: World) -> None:
    assert w.call("hydrate", *_with_thresholds(w.hydrate_args("other"), "30", "")) == [
        Code.OK,
        1,
    ]
    assert w.r.hmget(w.k.wallet("other", CT), "lt", "tt") == [b"30", None]


@covers(("charge", "hold"), Code.ACCOUNT_SUSPENDED)
@pytest.mark.parametrize("script", ["charge", "hold"])
def test_a_suspended_account_is_refused_and_nothing_changes(w: World, script: str) -> None:
    w.ok(w.call("account_set", *w.account_set_args("suspended")))
    keys, args = w.args(script, **({"hold_id": w.id()} if script == "hold" else {}))
    assert expect_unchanged(w, script, keys, args, Code.ACCOUNT_SUSPENDED) == [
        Code.ACCOUNT_SUSPENDED,
        ACCT.encode(),
    ]


def test_hydrate_takes_settings_set_after_its_sql_read(w: World) -> None:
    w.r.hset(w.k.account("other"), mapping={"o": "40", "s": "suspended", "r": "GPT:1:1000"})
    assert w.call("hydrate", *w.hydrate_args("other")) == [Code.OK, 1]
    assert w.r.hmget(w.k.wallet("other", CT), "o", "s", "r") == [b"40", b"1", b"GPT:1:1000"]


def test_hydrate_writes_the_accounts_own_rate_limits_from_sql(w: World) -> None:
    keys, args = w.hydrate_args("other")
    args = _patched("hydrate", args, "rate_limits", "*:5:1000")
    assert w.call("hydrate", keys, args) == [Code.OK, 1]
    assert w.r.hget(w.k.wallet("other", CT), "r") == b"*:5:1000"


def test_hydrate_keeps_no_rate_limits_when_account_set_removed_them_since(w: World) -> None:
    w.r.hset(w.k.account("other"), mapping={"o": "0", "s": "active"})  # no "r": none now
    keys, args = w.hydrate_args("other")
    args = _patched("hydrate", args, "rate_limits", "*:5:1000")  # SQL's read, older
    assert w.call("hydrate", keys, args) == [Code.OK, 1]
    assert w.r.hget(w.k.wallet("other", CT), "r") is None


# --- money codes ---------------------------------------------------------------------------


@covers(("charge", "hold", "settle", "adjust"), Code.INSUFFICIENT)
def test_insufficient_credits_report_balance_available_required(w: World) -> None:
    cases = [
        ("charge", w.charge_args(qty="9"), [90, 80, 90]),
        ("hold", w.hold_args(amount="81", hold_id=w.id()), [90, 80, 81]),
        ("settle", w.settle_args(amount="91"), [90, 90, 91]),
        ("adjust", w.adjust_args(amount="-81"), [90, 80, 81]),
    ]
    for script, (keys, args), detail in cases:
        reply = expect_unchanged(w, script, keys, args, Code.INSUFFICIENT)
        assert reply[1:] == detail, script


@covers(("charge",), Code.DRY_RUN)
def test_dry_run_that_would_succeed_answers_the_price_and_changes_nothing(w: World) -> None:
    reply = expect_unchanged(w, "charge", *w.charge_args(qty="8", dry_run=True), Code.DRY_RUN)
    assert reply == [Code.DRY_RUN, b"", 80, 90, 80, 10, b""]


def test_dry_run_that_would_fail_answers_insufficient_and_changes_nothing(w: World) -> None:
    reply = expect_unchanged(w, "charge", *w.charge_args(qty="9", dry_run=True), Code.INSUFFICIENT)
    assert reply[1:] == [90, 80, 90]


def test_dry_run_ignores_a_stored_idempotency_key(w: World) -> None:
    # K1 is the charge C's key: a charge with another fingerprint would get IDEMPOTENCY_MISMATCH
    keys, args = w.charge_args(idem="K1", fp="fp-another", dry_run=True)
    expect_unchanged(w, "charge", keys, args, Code.DRY_RUN)


@covers(("charge",), Code.RATE_LIMITED)
def test_a_rate_limited_charge_is_refused_and_changes_nothing(w: World) -> None:
    for _ in range(2):
        assert w.call("charge", *w.charge_args(tool="LIM"))[0][0] == Code.OK
    reply = expect_unchanged(w, "charge", *w.charge_args(tool="LIM"), Code.RATE_LIMITED)
    # one call per 30 s: the next passes 30 s after the first, the whole limit is back at 60 s
    assert reply == [Code.RATE_LIMITED, b"LIM", 2, 30_000, 60_000]


def test_a_charge_answers_the_rate_limit_in_force_after_it(w: World) -> None:
    # 2 a minute: after the first, 1 left and the whole limit back in 30 s; then 0 and 60 s
    assert w.call("charge", *w.charge_args(tool="LIM"))[0][7:] == [2, 1, 30_000]
    assert w.call("charge", *w.charge_args(tool="LIM"))[0][7:] == [2, 0, 60_000]
    assert w.call("charge", *w.charge_args(tool="GPT"))[0][7:] == []


def test_a_replay_answers_no_rate_limit_and_its_record_stores_none(w: World) -> None:
    keys, args = w.charge_args(tool="LIM", idem="RL1", entry=w.id())
    assert w.call("charge", keys, args)[0][7:] == [2, 1, 30_000]
    replay = w.call("charge", keys, args)[0]
    assert replay[0] == Code.REPLAYED and replay[7:] == []
    # the charge record keeps the reply without them
    fields = w.r.get(w.k.idempotency(ACCT, "RL1")).split(b"\x1f")
    assert len(fields) == wire.CHARGE_RECORD_FIELDS


def test_a_dry_run_answers_the_rate_limit_as_it_is(w: World) -> None:
    assert w.call("charge", *w.charge_args(tool="LIM", dry_run=True))[0][7:] == [2, 2, 0]
    w.ok(w.call("charge", *w.charge_args(tool="LIM")))
    assert w.call("charge", *w.charge_args(tool="LIM", dry_run=True))[0][7:] == [2, 1, 30_000]


@pytest.mark.parametrize("count", [1, 3])
def test_the_accounts_own_limit_beats_the_catalogs_lower_or_higher(w: World, count: int) -> None:
    w.ok(w.call("account_set", *w.account_set_args("active", "0", f"LIM:{count}:60000")))
    for _ in range(count):
        w.ok(w.call("charge", *w.charge_args(tool="LIM")))
    reply = expect_unchanged(w, "charge", *w.charge_args(tool="LIM"), Code.RATE_LIMITED)
    assert reply[:3] == [Code.RATE_LIMITED, b"LIM", count]


def test_a_limit_for_all_tools_limits_the_others_and_a_tools_own_beats_it(w: World) -> None:
    w.ok(w.call("account_set", *w.account_set_args("active", "0", "*:1:60000;LIM:3:60000")))
    assert w.call("charge", *w.charge_args(tool="GPT"))[0][7:] == [1, 0, 60_000]
    reply = expect_unchanged(w, "charge", *w.charge_args(tool="GPT"), Code.RATE_LIMITED)
    assert reply[:3] == [Code.RATE_LIMITED, b"GPT", 1]
    for _ in range(3):
        w.ok(w.call("charge", *w.charge_args(tool="LIM")))


def test_a_raised_limit_counts_the_slower_ones_calls_as_one_of_its_periods(w: World) -> None:
    w.ok(w.call("account_set", *w.account_set_args("active", "0", "LIM:1:3600000")))
    w.ok(w.call("charge", *w.charge_args(tool="LIM")))  # the next one an hour later
    w.ok(w.call("account_set", *w.account_set_args("active", "0", "LIM:2:1000")))
    reply = expect_unchanged(w, "charge", *w.charge_args(tool="LIM"), Code.RATE_LIMITED)
    assert reply == [Code.RATE_LIMITED, b"LIM", 2, 500, 1000]  # used up for one 500 ms interval


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_limit_of_zero_refuses_every_call(w: World, dry_run: bool) -> None:
    w.ok(w.call("account_set", *w.account_set_args("active", "0", "GPT:0:60000")))
    keys, args = w.charge_args(tool="GPT", dry_run=dry_run)
    reply = expect_unchanged(w, "charge", keys, args, Code.RATE_LIMITED)
    # nothing will pass: ask again in a period (the override may be lifted by then)
    assert reply == [Code.RATE_LIMITED, b"GPT", 0, 60_000, 60_000]


def test_a_refused_charge_is_not_counted_by_the_rate_limit(w: World) -> None:
    for _ in range(3):
        keys, args = w.charge_args(tool="LIM", qty="1000")  # more than the wallet holds
        assert w.call("charge", keys, args)[0][0] == Code.INSUFFICIENT
    for _ in range(2):
        assert w.call("charge", *w.charge_args(tool="LIM"))[0][0] == Code.OK


def test_a_dry_run_is_refused_by_a_used_up_limit_but_never_counted(w: World) -> None:
    for _ in range(5):
        assert w.call("charge", *w.charge_args(tool="LIM", dry_run=True))[0][0] == Code.DRY_RUN
    for _ in range(2):
        assert w.call("charge", *w.charge_args(tool="LIM"))[0][0] == Code.OK
    keys, args = w.charge_args(tool="LIM", dry_run=True)
    expect_unchanged(w, "charge", keys, args, Code.RATE_LIMITED)


def test_the_whole_available_amount_can_be_spent(w: World) -> None:
    reply = w.call("charge", *w.charge_args(qty="8"))[0]
    assert reply[:6] == [Code.OK, reply[1], 80, 10, 0, 10]


@covers(("charge", "hold", "grant", "adjust"), Code.AMOUNT_OVERFLOW)
@pytest.mark.parametrize(
    ("script", "kwargs", "detail"),
    [
        ("charge", {"tool": "HUGE", "qty": "2"}, 2 * CREDITS_MAX),
        ("hold", {"tool": "HUGE", "qty": "2"}, 2 * CREDITS_MAX),
        ("hold", {"amount": str(CREDITS_MAX), "qty": "2"}, None),  # a fixed amount ignores qty
        ("grant", {"amount": str(CREDITS_MAX - 89)}, CREDITS_MAX + 1),
        ("adjust", {"amount": str(CREDITS_MAX - 87)}, CREDITS_MAX + 3),  # even: exact as a double
    ],
)
def test_amount_overflow(w: World, script: str, kwargs: dict[str, str], detail: int | None) -> None:
    if script == "hold":
        kwargs = {**kwargs, "hold_id": w.id()}
    keys, args = w.args(script, **kwargs)
    if detail is None:  # amount = CREDITS_MAX is legal: then the wallet lacks the credits
        expect_unchanged(w, script, keys, args, Code.INSUFFICIENT)
        return
    reply = expect_unchanged(w, script, keys, args, Code.AMOUNT_OVERFLOW)
    assert reply[1] == str(detail).encode()


@pytest.mark.parametrize("script", ["charge", "hold"])
def test_amount_overflow_reports_the_true_product_for_the_largest_quantity(
    w: World, script: str
) -> None:
    keys, args = w.args(
        script, tool="HUGE", qty="1000000000", **({"hold_id": w.id()} if script == "hold" else {})
    )
    reply = expect_unchanged(w, script, keys, args, Code.AMOUNT_OVERFLOW)
    assert int(reply[1]) > CREDITS_MAX  # not a wrapped-around negative number


def test_grant_up_to_credits_max_is_accepted(w: World) -> None:
    reply = w.call("grant", *w.grant_args(amount=str(CREDITS_MAX - 90)))
    assert reply[0] == Code.OK
    assert reply[4] == CREDITS_MAX


# --- limits --------------------------------------------------------------------------------


def _fill(w: World, prefix: str, n: int, value: str) -> None:
    w.r.hset(w.k.wallet(ACCT, CT), mapping={f"{prefix}:x{i}": value for i in range(n)})


@covers(("grant", "adjust"), Code.LIMIT)
@pytest.mark.parametrize(("script", "kwargs"), [("grant", {}), ("adjust", {"amount": "5"})])
def test_the_1001st_grant_is_over_the_limit(w: World, script: str, kwargs: dict) -> None:
    _fill(w, "g", 999, "1|50|0|p")  # + g1 = 1000 grants
    reply = expect_unchanged(w, script, *w.args(script, **kwargs), Code.LIMIT)
    assert reply == [Code.LIMIT, b"grants"]


def test_the_1000th_grant_is_accepted(w: World) -> None:
    _fill(w, "g", 998, "1|50|0|p")
    assert w.call("grant", *w.grant_args())[0] == Code.OK


@covers(("hold",), Code.LIMIT)
def test_the_1001st_hold_is_over_the_limit(w: World) -> None:
    _fill(w, "h", 999, f"0|{T0_MS + 60_000}")  # + the open hold = 1000 holds
    reply = expect_unchanged(w, "hold", *w.hold_args(hold_id=w.id()), Code.LIMIT)
    assert reply == [Code.LIMIT, b"holds"]


# --- hold and charge codes -----------------------------------------------------------------


@covers(("settle", "release", "extend"), Code.HOLD_NOT_FOUND)
@pytest.mark.parametrize("script", ["settle", "release", "extend"])
def test_unknown_hold_is_hold_not_found(w: World, script: str) -> None:
    reply = expect_unchanged(w, script, *w.args(script, hold_id=w.id()), Code.HOLD_NOT_FOUND)
    assert reply == [Code.HOLD_NOT_FOUND]


@covers(("settle", "release", "extend"), Code.HOLD_NOT_ACTIVE)
@pytest.mark.parametrize("script", ["settle", "release", "extend"])
@pytest.mark.parametrize("status", ["released", "settled"])
def test_ended_hold_is_hold_not_active(w: World, script: str, status: str) -> None:
    if status == "settled":
        w.ok(w.call("settle", *w.settle_args(amount="3", idem="s0")))
    hold_id = w.hold2_id if status == "released" else w.hold_id
    reply = expect_unchanged(w, script, *w.args(script, hold_id=hold_id), Code.HOLD_NOT_ACTIVE)
    assert reply == [Code.HOLD_NOT_ACTIVE, status.encode()]


@pytest.mark.parametrize("script", ["settle", "release", "extend"])
def test_hold_past_its_expiry_is_not_active_and_expires_then(w: World, script: str) -> None:
    keys, args = w.args(script)
    reply = w.call(script, keys, _patched(script, args, "now_ms", str(T0_MS + 300_000)))
    assert reply == [Code.HOLD_NOT_ACTIVE, b"expired"]
    assert w.r.hget(w.k.hold(w.b, w.hold_id), "s") == b"expired"
    assert not w.r.hexists(w.k.wallet(ACCT, CT), f"h:{w.hold_id}")
    assert not w.r.exists(_key(script, keys, "idempotency"))  # no record for an error


@covers(("refund",), Code.CHARGE_NOT_FOUND)
def test_unknown_charge_is_charge_not_found(w: World) -> None:
    reply = expect_unchanged(w, "refund", *w.refund_args(charge_id=w.id()), Code.CHARGE_NOT_FOUND)
    assert reply == [Code.CHARGE_NOT_FOUND]


@covers(("refund",), Code.OVER_REFUND)
def test_refund_beyond_the_charge_is_over_refund(w: World) -> None:
    reply = expect_unchanged(w, "refund", *w.refund_args(amount="11"), Code.OVER_REFUND)
    assert reply == [Code.OVER_REFUND, 10]
    w.ok(w.call("refund", *w.refund_args(amount="4", idem="f0")))
    reply = expect_unchanged(w, "refund", *w.refund_args(amount="7"), Code.OVER_REFUND)
    assert reply == [Code.OVER_REFUND, 6]
    w.ok(w.call("refund", *w.refund_args(idem="f2")))
    reply = expect_unchanged(w, "refund", *w.refund_args(), Code.OVER_REFUND)
    assert reply == [Code.OVER_REFUND, 0]


# --- idempotency ---------------------------------------------------------------------------


@covers(ALL_WRITES, Code.IDEMPOTENCY_MISMATCH)
@pytest.mark.parametrize("script", ALL_WRITES)
def test_reused_idempotency_key_with_other_parameters_is_a_mismatch(w: World, script: str) -> None:
    kwargs: dict[str, Any] = {"idem": "K1", "fp": "fp-another"}
    if script == "hold":
        kwargs["hold_id"] = w.id()
    reply = expect_unchanged(w, script, *w.args(script, **kwargs), Code.IDEMPOTENCY_MISMATCH)
    assert reply == [Code.IDEMPOTENCY_MISMATCH]


@covers(ALL_WRITES, Code.OK, Code.REPLAYED)
@pytest.mark.parametrize("script", ALL_WRITES)
def test_replay_returns_the_first_reply_and_changes_nothing(w: World, script: str) -> None:
    kwargs: dict[str, Any] = {"idem": "R1"}
    if script == "hold":
        kwargs["hold_id"] = w.id()
    keys, args = w.args(script, **kwargs)
    first = w.call(script, keys, args)
    first = first[0] if script_is_batch(first) else first
    assert first[0] == Code.OK, first
    before = w.snap()
    again = w.call(script, keys, args)
    again = again[0] if script_is_batch(again) else again
    assert again[0] == Code.REPLAYED
    assert [_b(x) for x in again[1:]] == [_b(x) for x in first[1:]]
    assert w.snap() == before


def _b(x: object) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def test_replay_wins_over_a_later_failure(w: World) -> None:
    """A retried charge answers its first result even when it could not succeed now."""
    keys, args = w.charge_args(qty="8", idem="R2")
    w.ok(w.call("charge", keys, args))  # available is 0 now
    assert w.call("charge", keys, args)[0][0] == Code.REPLAYED


# --- the remaining OK answers -------------------------------------------------------------


@covers(("hydrate",), Code.OK)
def test_hydrate_writes_once_and_then_reports_present(w: World) -> None:
    keys, args = w.hydrate_args()
    assert w.call("hydrate", keys, args) == [Code.OK, 1]
    before = w.snap()
    assert w.call("hydrate", keys, _patched("hydrate", args, "remaining", "999")) == [Code.OK, 0]
    assert w.snap() == before


@covers(("expire",), Code.OK)
def test_expire_of_nothing_due_changes_nothing(w: World) -> None:
    before = w.snap()
    assert w.call("expire", *w.expire_args()) == [Code.OK, 0, 0]
    assert w.snap() == before


# --- the caller's clock against Redis TIME (includes/clock) -------------------------------

SKEW_MS_MAX = "5000"
TWO_HOURS_MS = 2 * 3_600_000


def _server_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


@covers(CLOCKED, Code.CLOCK_SKEW)
@pytest.mark.parametrize("offset_ms", [TWO_HOURS_MS, -TWO_HOURS_MS])
@pytest.mark.parametrize("script", CLOCKED)
def test_a_clock_far_from_redis_time_is_clock_skew_and_changes_nothing(
    w: World, script: str, offset_ms: int
) -> None:
    keys, args = w.args(script)
    caller_ms = _server_ms(w.r) + offset_ms
    reply = expect_unchanged(
        w,
        script,
        keys,
        _patched(script, args, "now_ms", f"{caller_ms}:{SKEW_MS_MAX}"),
        Code.CLOCK_SKEW,
    )
    assert int(reply[1]) == caller_ms
    assert abs(int(reply[2]) - (caller_ms - offset_ms)) < 60_000


@pytest.mark.parametrize("script", CLOCKED)
def test_a_clock_within_the_bound_is_accepted(w: World, script: str) -> None:
    now = f"{_server_ms(w.r) + 1_000}:{SKEW_MS_MAX}"
    hold: dict[str, str] = {}
    if script in ("hold", "settle", "release", "extend"):
        # A hold opened on the server's clock: the world's own hold follows the test clock
        # (fixed when the suite was collected) and has expired on it in a long run.
        hold = {"hold_id": w.id()}
        if script != "hold":
            keys, args = w.hold_args(idem="clock-hold", **hold)
            w.ok(w.call("hold", keys, _patched("hold", args, "now_ms", now)))
    keys, args = w.args(script, **hold)
    reply = w.call(script, keys, _patched(script, args, "now_ms", now))
    assert _code(reply) == Code.OK, reply


@pytest.mark.parametrize("now", ["1:", ":5000", "1:-5", "1:5:5", f"{BIG}:5000", f"1:{BIG}"])
def test_a_malformed_clock_bound_is_bad_argument(w: World, now: str) -> None:
    keys, args = w.args("expire")
    reply = expect_unchanged(
        w, "expire", keys, _patched("expire", args, "now_ms", now), Code.BAD_ARGUMENT
    )
    assert reply == [Code.BAD_ARGUMENT, b"now_ms"]


def test_a_bare_now_is_the_callers_own_clock_and_not_bounded(w: World) -> None:
    """Tests and simulations drive time themselves: without a bound nothing is compared."""
    keys, args = w.args("grant")
    far = str(_server_ms(w.r) - TWO_HOURS_MS)
    assert _code(w.call("grant", keys, _patched("grant", args, "now_ms", far))) == Code.OK


# --- clawback ------------------------------------------------------------------------------


@covers(("clawback",), Code.OK)
def test_clawback_takes_the_difference_from_its_grant_first_and_nothing_twice(w: World) -> None:
    keys, args = w.clawback_args(target="5")
    reply = w.call("clawback", keys, args)
    entry = args[_index("clawback", "entry_id")].encode()
    assert reply == [Code.OK, entry, 5, 5, 85, 75, 10]
    assert w.r.hget(w.k.wallet(ACCT, CT), "g:g1") is not None
    before = w.snap()
    assert w.call("clawback", *w.clawback_args(target="5")) == [Code.OK, b"", 0, 5, 85, 75, 10]
    assert w.call("clawback", *w.clawback_args(target="3")) == [Code.OK, b"", 0, 5, 85, 75, 10]
    assert w.snap() == before


@covers(("clawback",), Code.OK)
def test_clawback_trusts_the_total_sql_knows_when_its_record_is_gone(w: World) -> None:
    keys, args = w.clawback_args(target="8", known="7")
    clawed = _key("clawback", keys, "clawed")
    assert not w.r.exists(clawed)
    reply = w.call("clawback", keys, args)
    assert reply[:5] == [Code.OK, args[_index("clawback", "entry_id")].encode(), 1, 8, 89]
    assert w.r.get(clawed) == b"8"


# --- flush_ack -----------------------------------------------------------------------------


class Flushing:
    """The World's journal read (not acknowledged) by consumer c1, and the bucket's flush
    lock held with token 'tok'."""

    def __init__(self, w: World) -> None:
        self.w, self.journal, self.lock = w, w.k.journal(w.b), w.k.flush_lock(w.b)
        w.r.xgroup_create(self.journal, GROUP, id="0")
        read = w.r.xreadgroup(GROUP, "c1", {self.journal: ">"})[0][1]
        self.ids = [sid.decode() for sid, _ in read]
        assert len(self.ids) >= 4, self.ids
        w.r.set(self.lock, "tok", px=5_000)

    def ack(self, ids: list[str], committed: str, token: str = "tok", ttl_ms: str = "15000") -> Any:
        return self.w.call(
            "flush_ack",
            sig.FLUSH_ACK.key_list(journal=self.journal, lock=self.lock),
            sig.FLUSH_ACK.arg_list(
                group=GROUP,
                token=token,
                lock_ttl_ms=ttl_ms,
                committed=committed,
                ids=[{"stream_id": i} for i in ids],
            ),
        )

    def pending(self) -> int:
        return int(self.w.r.xpending(self.journal, GROUP)["pending"])


@covers(("flush_ack",), Code.OK)
def test_flush_ack_acks_trims_below_what_sql_committed_and_renews_the_lock(w: World) -> None:
    f = Flushing(w)
    e1, e2 = f.ids[0], f.ids[1]
    assert f.ack([e1, e2], e2) == [Code.OK, 2, 1, 1]  # e1 trimmed; e2 is the committed mark
    assert [sid.decode() for sid, _ in w.r.xrange(f.journal)] == f.ids[1:]
    assert f.pending() == len(f.ids) - 2
    assert w.r.pttl(f.lock) > 5_000  # renewed to 15 s


@covers(("flush_ack",), Code.OK)
def test_flush_ack_never_trims_an_entry_still_pending(w: World) -> None:
    f = Flushing(w)
    assert f.ack([f.ids[1]], f.ids[-1]) == [Code.OK, 1, 0, 1]  # ids[0] is still pending
    assert w.r.xlen(f.journal) == len(f.ids)


@covers(("flush_ack",), Code.OK)
def test_flush_ack_of_a_lost_lock_leaves_the_lock_and_a_release_frees_it(w: World) -> None:
    f = Flushing(w)
    w.r.set(f.lock, "other", px=5_000)
    assert f.ack([f.ids[0]], "") == [Code.OK, 1, 0, 0]
    assert w.r.get(f.lock) == b"other"
    w.r.set(f.lock, "tok", px=5_000)
    assert f.ack([], "", ttl_ms="0") == [Code.OK, 0, 0, 1]
    assert not w.r.exists(f.lock)


@covers(("flush_ack",), Code.BAD_ARGUMENT)
@pytest.mark.parametrize(
    ("ttl_ms", "committed", "field"),
    [
        *[(v, "", "ttl_ms") for v in [*NUMBERS, str(HOLD_TTL_S_MAX * 1000 + 1)]],
        *[("15000", v, "committed") for v in ["abc", "1-", "-1", "1-2-3", "1", " 1-0"]],
    ],
)
def test_flush_ack_rejects_a_malformed_ttl_or_mark_and_acks_nothing(
    w: World, ttl_ms: str, committed: str, field: str
) -> None:
    f = Flushing(w)
    before = w.snap(f.journal, f.lock)
    reply = f.ack(f.ids[:2], committed, ttl_ms=ttl_ms)
    assert reply == [Code.BAD_ARGUMENT, field.encode()]
    assert w.snap() == before
    assert f.pending() == len(f.ids)


# --- consumer_prune ------------------------------------------------------------------------


@covers(("consumer_prune",), Code.OK)
def test_consumer_prune_deletes_only_a_consumer_with_nothing_pending(w: World) -> None:
    f = Flushing(w)
    w.r.xgroup_createconsumer(f.journal, GROUP, "idle")
    before = w.snap()
    assert w.call("consumer_prune", [f.journal], [GROUP, "c1"]) == [Code.OK, 0]
    assert w.snap() == before  # c1 keeps the entries it read
    assert w.call("consumer_prune", [f.journal], [GROUP, "idle"]) == [Code.OK, 1]
    names = {c["name"] for c in w.r.xinfo_consumers(f.journal, GROUP)}
    assert names == {b"c1"}


def test_consumer_prune_of_an_unknown_group_is_an_error_and_deletes_nothing(w: World) -> None:
    """The script has no reply for a bad argument: Redis refuses XPENDING on a group that
    does not exist, and the call raises before anything is deleted."""
    f = Flushing(w)
    before = w.snap()
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        w.call("consumer_prune", [f.journal], ["no-such-group", "c1"])
    assert w.snap() == before


# --- idem_restore and the code it leads to -----------------------------------------------


def _restore(w: World, idem_keys: list[str], expires_ms: list[int]) -> Any:
    return w.call(
        "idem_restore",
        [w.k.idempotency(ACCT, key) for key in idem_keys],
        [NOW, *(str(ms) for ms in expires_ms)],
    )


@covers(("idem_restore",), Code.OK)
def test_idem_restore_marks_live_keys_and_keeps_a_record_present(w: World) -> None:
    k1 = w.r.get(w.k.idempotency(ACCT, "K1"))
    live, gone = T0_MS + 60_000, T0_MS - 1
    assert _restore(w, ["K1", "new", "old"], [live, live, gone]) == [Code.OK, 1]
    assert w.r.get(w.k.idempotency(ACCT, "K1")) == k1  # a request after the loss: kept
    assert w.r.get(w.k.idempotency(ACCT, "new")) == b"\x1e"
    assert 0 < w.r.pttl(w.k.idempotency(ACCT, "new")) <= 60_000
    assert not w.r.exists(w.k.idempotency(ACCT, "old"))  # its TTL had run out


@covers(("idem_restore",), Code.BAD_ARGUMENT)
@pytest.mark.parametrize(
    ("n_keys", "argv", "field"),
    [
        (2, [NOW, str(T0_MS + 1)], "batch"),  # one expiry for two keys
        (1, [NOW, str(T0_MS + 1), str(T0_MS + 1)], "batch"),
        (IDEM_RESTORE_BATCH_MAX + 1, [NOW, *[str(T0_MS + 1)] * 1001], "batch"),
        *[(1, [v, str(T0_MS + 1)], "now_ms") for v in NUMBERS],
        *[(1, [NOW, v], "expires_at_ms") for v in NUMBERS],
    ],
)
def test_idem_restore_rejects_a_malformed_batch_and_writes_nothing(
    w: World, n_keys: int, argv: list[str], field: str
) -> None:
    keys = [w.k.idempotency(ACCT, f"r{i}") for i in range(n_keys)]
    reply = expect_unchanged(w, "idem_restore", keys, argv, Code.BAD_ARGUMENT)
    assert reply == [Code.BAD_ARGUMENT, field.encode()]


@covers(ALL_WRITES, Code.IDEMPOTENCY_IN_SQL)
@pytest.mark.parametrize("script", ALL_WRITES)
def test_a_key_restored_from_sql_is_idempotency_in_sql_and_changes_nothing(
    w: World, script: str
) -> None:
    """A retry of a request SQL has and Redis lost is never applied again."""
    assert _restore(w, ["LOST"], [T0_MS + 60_000]) == [Code.OK, 1]
    kwargs: dict[str, Any] = {"idem": "LOST"}
    if script == "hold":
        kwargs["hold_id"] = w.id()
    reply = expect_unchanged(w, script, *w.args(script, **kwargs), Code.IDEMPOTENCY_IN_SQL)
    assert reply == [Code.IDEMPOTENCY_IN_SQL]


# --- catalog_set's answer -----------------------------------------------------------------


@covers(("catalog_set",), Code.OK)
def test_catalog_set_answers_how_many_tools_it_wrote(w: World) -> None:
    other = (w.b + 1) % w.k.buckets
    keys, args = w.catalog_args("replace", bucket=other)
    assert w.call("catalog_set", keys, args) == [Code.OK, 5]
    assert w.call("catalog_set", keys, ["merge", "NEW", "2", CT, "1", ""]) == [Code.OK, 1]
    assert set(w.r.hkeys(keys[0])) >= {b"GPT", b"NEW", b"~"}


# --- every declared code has a test ------------------------------------------------------

# A call of an include's function (not its definition) means the script returns its codes.
INCLUDE_CODES = {"idem_check": Code.IDEMPOTENCY_IN_SQL, "clock_arg": Code.CLOCK_SKEW}


def declared_codes(name: str) -> set[int]:
    """The codes of the `Output:` of the script's header, and those of the includes it
    calls (an include's codes are not repeated in every header)."""
    source = scripts.get(name).source
    header = source[source.index("--[[") : source.index("]]")]
    output = header[header.index("Output:") :]
    codes = set()
    for first, second in re.findall(r"\{(-?\d+)(?:\|(\d+))?", output):
        codes.add(int(first))
        if second:
            codes.add(int(second))
    for function, code in INCLUDE_CODES.items():
        if re.search(rf"(?<!function ){function}\(", source):
            codes.add(int(code))
    return codes


def test_every_declared_code_of_every_script_is_tested() -> None:
    untested = {
        name: sorted(declared_codes(name) - COVERED[name])
        for name in scripts.registry()
        if declared_codes(name) - COVERED[name]
    }
    assert not untested, f"return codes no test here proves (script: codes): {untested}"
    assert declared_codes("charge") >= {0, 1, -1, -2, -3, -4, -5, -6, -7, -12, -13, -20, -21}
    assert declared_codes("consumer_prune") >= {0}
    assert declared_codes("balance") >= {0, -1}
