"""Redis memory per wallet and per charge, by MEMORY USAGE (key, value and overhead).

Wallet: a hash with one grant, made by Meter.grant. Per charge: the idempotency record and
the charge record (each a string key with a TTL), and the journal stream's growth / charge.
"""

from __future__ import annotations

from typing import Any

from bench import workload

JOURNAL_CHARGES = 1000


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
    idem = _usage(client, keys.idempotency(account, result.id))
    record = _usage(client, keys.charge(bucket, result.id))
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
        "memory_idempotency": {
            "value": idem,
            "unit": unit,
            "note": "idempotency record of one charge (string + TTL)",
        },
        "memory_charge_record": {
            "value": record,
            "unit": unit,
            "note": "charge record of one charge (string + TTL)",
        },
        "memory_journal_entry": {
            "value": per_entry,
            "unit": unit,
            "note": f"journal stream growth / charge over {journal_charges}",
        },
    }
