"""Every script call touches one cluster slot; ids carry their bucket and are UUIDv7."""

from __future__ import annotations

import time
import uuid
import zlib

import pytest
from redis.crc import key_slot

from meter import Keys, Tool, ids, ops, scripts, signatures
from meter.models import GrantInfo, HoldSnapshot, WalletSnapshot
from sync.flush import GROUP

ACCOUNTS = ["acct-1", "user@example.com", "org:42.team_b", "x" * 128]
KEYS = Keys(prefix="kt", buckets=64)
CHARGE_RECORD = b"%s\x1fcredits\x1fGPT\x1f10\x1f0\x1fg1:10:50:0:p"


def _env() -> ops.Env:
    return ops.Env(KEYS, clock_ms=lambda: 1_700_000_000_000)


def _assert_one_slot(ev: ops.Eval) -> None:
    assert isinstance(ev, ops.Eval), ev
    slots = {key_slot(k.encode()) for k in ev.keys}
    assert len(slots) == 1, (ev.script, ev.keys)
    assert key_slot(KEYS.due(ev.bucket).encode()) in slots


def _first_eval(op: ops.Op[object], reply: object = None) -> ops.Eval:
    """The op's first script call; a read (owner lookup) is answered with `reply` first."""
    request = next(op)
    if isinstance(request, ops.Command):
        request = op.send(reply)
    assert isinstance(request, ops.Eval), request
    return request


def _account_set_eval(account: str) -> ops.Eval:
    """set_account's script call, after the account's credit types (SQL, then catalog)."""
    op = ops.set_account(_env(), account, overdraft_limit=5, suspended=True)
    assert isinstance(next(op), ops.LoadAccountTypes)
    assert isinstance(op.send(["credits"]), ops.Command)
    request = op.send({b"GPT": b"1|gems|1"})
    assert isinstance(request, ops.Eval)
    assert len(request.keys) == 3  # the account key and both wallets
    return request


def _hold_id(account: str) -> str:
    return ids.new_id(KEYS.bucket(account))


@pytest.mark.parametrize("account", ACCOUNTS)
def test_every_account_operation_uses_one_slot(account: str) -> None:
    env = _env()
    ct = "credits"
    hold_id, charge_id = _hold_id(account), _hold_id(account)
    owner = (account, ct)
    hold_reply = [account.encode(), ct.encode()]
    evals = [
        _first_eval(ops.charge(env, account, "GPT", 2, idempotency_key="k1")),
        _first_eval(ops.hold(env, account, "GPT", ttl_s=60)),
        _first_eval(ops.grant(env, account, ct, 5, expires_at_ms=2_000_000_000_000)),
        _first_eval(ops.adjust(env, account, ct, -5, reason="fix")),
        _first_eval(ops.settle(env, hold_id, 3, owner=owner)),
        _first_eval(ops.settle(env, hold_id), hold_reply),
        _first_eval(ops.release(env, hold_id, owner=owner)),
        _first_eval(ops.release(env, hold_id), hold_reply),
        _first_eval(ops.extend(env, hold_id, 60, owner=owner)),
        _first_eval(ops.extend(env, hold_id, 60), hold_reply),
        _first_eval(ops.refund(env, charge_id, 1), CHARGE_RECORD % account.encode()),
        _first_eval(ops.balance(env, account, ["credits", "gems"])),
        _first_eval(ops.expire_wallet(env, KEYS.bucket(account), account, ct)),
        _first_eval(ops.clawback(env, account, ct, 10, reference_id="pi_1", grant_id=hold_id)),
        _first_eval(ops.restore_idempotency(env, account, (("k1", 2 * 10**12), ("k2", 1)))),
        ops.hydrate_eval(KEYS, account, ct, _snapshot_with_holds(account)),
        _account_set_eval(account),
        _first_eval(ops.set_threshold(env, account, ct, "low", 50)),
        *_flush_evals(KEYS.bucket(account)),
    ]
    for ev in evals:
        _assert_one_slot(ev)
    evals += ops.catalog_evals(KEYS, [Tool("GPT", 1, "credits")], "merge")
    # Every script in lua/ is called above: a new one must be added here.
    assert {ev.script for ev in evals} == set(scripts.registry())


def _flush_evals(bucket: int) -> list[ops.Eval]:
    """The flusher's scripts, with the keys sync.flush (flush_ack) and sync.consumers
    (consumer_prune) pass them."""
    journal, lock = KEYS.journal(bucket), KEYS.flush_lock(bucket)
    return [
        ops.Eval.of(
            signatures.FLUSH_ACK,
            bucket,
            keys={"journal": journal, "lock": lock},
            args={
                "group": GROUP,
                "token": "token",
                "lock_ttl_ms": "0",
                "committed": "",
                "ids": [{"stream_id": "1-0"}],
            },
        ),
        ops.Eval.of(
            signatures.CONSUMER_PRUNE,
            bucket,
            keys={"journal": journal},
            args={"group": GROUP, "consumer": "host:1"},
        ),
    ]


def _snapshot_with_holds(account: str) -> WalletSnapshot:
    return WalletSnapshot(
        overdraft_limit=5,
        debt=1,
        grants=(GrantInfo("g1", 10, 50, 0, "paid"),),
        holds=tuple(HoldSnapshot(_hold_id(account), 3, 1_700_000_100_000, "GPT") for _ in range(3)),
    )


@pytest.mark.parametrize("account", ACCOUNTS)
def test_hydrate_with_holds_uses_one_slot(account: str) -> None:
    ev = ops.hydrate_eval(KEYS, account, "credits", _snapshot_with_holds(account))
    assert len(ev.keys) == 6  # wallet, account, due and three holds
    _assert_one_slot(ev)


def test_catalog_replicas_are_one_per_bucket_each_in_its_bucket_slot() -> None:
    evals = ops.catalog_evals(KEYS, [Tool("GPT", 1, "credits")], "merge")
    assert [ev.bucket for ev in evals] == list(range(KEYS.buckets))
    for ev in evals:
        _assert_one_slot(ev)
        assert ev.keys == [KEYS.catalog(ev.bucket)]


@pytest.mark.parametrize("account", ACCOUNTS)
@pytest.mark.parametrize("buckets", [1, 16, 1000, 16_384])
def test_bucket_is_crc32_of_account_modulo_buckets(account: str, buckets: int) -> None:
    assert Keys(buckets=buckets).bucket(account) == zlib.crc32(account.encode()) % buckets


@pytest.mark.parametrize("bucket", [0, 1, 15, 255, 16_383])
def test_new_id_carries_its_bucket(bucket: int) -> None:
    assert ids.bucket_of(ids.new_id(bucket)) == bucket


def test_new_id_is_a_uuid_v7_with_rfc_variant_and_its_time() -> None:
    now_ms = int(time.time() * 1000)
    u = uuid.UUID(ids.new_id(7, now_ms))
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert u.int >> 80 == now_ms


def test_new_ids_sort_by_time() -> None:
    made = [ids.new_id(3, 1_700_000_000_000 + ms) for ms in range(0, 5000, 7)]
    assert sorted(made) == made
    assert len(set(made)) == len(made)


def test_new_ids_of_the_same_ms_differ() -> None:
    assert len({ids.new_id(0, 1_700_000_000_000) for _ in range(1000)}) == 1000
