"""Entry, hold and grant ids: UUIDv7 whose last 16 bits carry the account's bucket.

A charge or hold is later addressed by its id alone (`refund(charge_id)`, `settle(hold_id)`,
`POST /v1/holds/{id}/settle`); the bucket in the id tells which slot holds its record without
a global index (which could not be written atomically on Redis Cluster).
"""

from __future__ import annotations

import os
import re
import time

from meter import bounds
from meter.errors import InvalidArgument

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_id(bucket: int, now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit ms time, version 7, variant 10, random bits, bucket last."""
    assert 0 <= bucket < bounds.BUCKETS_MAX, bucket
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(8), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76 | (rand >> 52) << 64  # version 7, 12 random bits
    value |= 0b10 << 62 | (rand & 0x3FFF_FFFF_FFFF) << 16 | bucket  # variant, 46 random bits
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def bucket_of(entry_id: str) -> int:
    """The bucket an id made by new_id was made for."""
    if not _UUID_RE.fullmatch(entry_id):
        raise InvalidArgument("id", "not an id made by this service")
    return int(entry_id[-4:], 16)
