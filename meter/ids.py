"""Entry, hold and grant ids: UUIDv7 whose last 16 bits carry the account's bucket.

A charge or hold is later addressed by its id alone (`refund(charge_id)`, `settle(hold_id)`,
`POST /v1/holds/{id}/settle`); the bucket in the id tells which slot holds its record without
a global index (which could not be written atomically on Redis Cluster).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time

from meter import bounds
from meter.errors import InvalidArgument

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


_lock = threading.Lock()
_random = random.Random(os.urandom(32))  # uniqueness, not secrecy: one syscall per process
# A forked child must not repeat its parent's random sequence.
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))
_last_ms = 0
_seq = 0
SEQ_MAX = 0xFFF  # 12 bits of rand_a hold a per-millisecond counter (RFC 9562, method 1)


def _next_stamp(now_ms: int | None) -> tuple[int, int]:
    """(ms, seq): strictly increasing within this process, so ids made here sort in creation
    order even within one millisecond ("oldest grant burns first" relies on it)."""
    global _last_ms, _seq
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > SEQ_MAX:  # 4096 ids in one ms: borrow the next millisecond
                ms, _seq = ms + 1, 0
        else:
            _seq = 0
        _last_ms = ms
        return ms, _seq


def new_id(bucket: int, now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit ms time, version 7, 12-bit counter, variant 10, 46 random
    bits, then the bucket in the last 16 bits."""
    assert 0 <= bucket < bounds.BUCKETS_MAX, bucket
    ms, seq = _next_stamp(now_ms)
    rand = _random.getrandbits(46)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | seq << 64
    value |= 0b10 << 62 | rand << 16 | bucket
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def bucket_of(entry_id: str) -> int:
    """The bucket an id made by new_id was made for."""
    if not _UUID_RE.fullmatch(entry_id):
        raise InvalidArgument("id", "not an id made by this service")
    return int(entry_id[-4:], 16)


def det_id(seed: str) -> str:
    """The deterministic id lua/includes/det_id.lua gives entries a script creates itself:
    SHA-1 of the seed, UUID-shaped, version nibble 8."""
    h = hashlib.sha1(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{h[16:20]}-{h[20:32]}"


def expire_entry_id(grant_id: str) -> str:
    """The id of the entry that journals a grant's expiry (lua/includes/wallet_expire.lua)."""
    return det_id(f"expire|{grant_id}")
