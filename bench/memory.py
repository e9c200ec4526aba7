"""Redis memory per wallet and per charge, by MEMORY USAGE (key, value and overhead).

Wallet: a hash with one grant, made by Meter.grant. Per charge: its record (one string key
with a TTL that serves both its replays and its refunds, lua/includes/charge_record) for a
charge without its own idempotency key, and with one (the record at that key plus a pointer
at the charge key); the journal stream's growth / charge; and their sum, the goal's figure.
"""

from __future__ import annotations

from typing import Any

from bench import workload

JOURNAL_CHARGES = 1000
KEYED_IDEMPOTENCY_KEY = "req-0123456789abcdef"  # the length of a typical request id


def _usage(client: Any, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def measure(
    url: str, journal_charges: int = JOURNAL_CHARGES, prefix: str = workload.PREFIX
) -> dict[str, dict[str, Any]]:
    """Bytes per item; one figure per row name."""
    account = "memory-account"
    meter = workload.prepare(url, [account], prefix)
    client, keys = meter.redis, meter.keys
    bucket = keys.bucket(account)
    wallet = _usage(client, keys.wallet(account, workload.CREDIT_TYPE))
    result = meter.charge(account, workload.TOOL)
    record = _usage(client, keys.charge(bucket, result.id))
    keyed = meter.charge(account, workload.TOOL, idempotency_key=KEYED_IDEMPOTENCY_KEY)
    keyed_bytes = _usage(client, keys.charge(bucket, keyed.id))
    keyed_bytes += _usage(client, keys.idempotency(account, KEYED_IDEMPOTENCY_KEY))
    journal = keys.journal(bucket)
    before = _usage(client, journal)
    for _ in range(journal_charges):
        meter.charge(account, workload.TOOL)
    per_entry = (_usage(client, journal) - before) / journal_charges
    meter.redis.close()
    unit = "bytes"
    return {
        "memory_wallet": {
            "value": wallet,
            "unit": unit,
            "note": "wallet hash with one grant (Meter.grant), MEMORY USAGE",
        },
        "memory_charge_record": {
            "value": record,
            "unit": unit,
            "note": "record of one charge without its own idempotency key (string + TTL)",
        },
        "memory_charge_keyed": {
            "value": keyed_bytes,
            "unit": unit,
            "note": "record + charge key pointer of one charge with an idempotency key",
        },
        "memory_journal_entry": {
            "value": per_entry,
            "unit": unit,
            "note": f"journal stream growth / charge over {journal_charges}",
        },
        "memory_per_charge": {
            "value": record + per_entry,
            "unit": unit,
            "note": "kept 25 h per charge: its record + its journal entry",
        },
    }
