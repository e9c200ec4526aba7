"""The only place Redis key names are built.

Every key of an account, and its bucket's journal, due set, catalog replica and events
channel, carries the bucket's hash tag `{<bucket>}`, so every script touches one cluster slot.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from meter import bounds


@dataclass(frozen=True)
class Keys:
    prefix: str = "cm"
    buckets: int = 16

    def __post_init__(self) -> None:
        assert 1 <= self.buckets <= bounds.BUCKETS_MAX, self.buckets
        assert self.prefix and "{" not in self.prefix, self.prefix

    def bucket(self, account_id: str) -> int:
        return zlib.crc32(account_id.encode()) % self.buckets

    @functools.cached_property
    def _tags(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}:{{{bucket}}}" for bucket in range(self.buckets))

    def _tag(self, bucket: int) -> str:
        # A bucket read from an id may come from a deployment with more buckets.
        tags = self._tags
        return tags[bucket] if 0 <= bucket < len(tags) else f"{self.prefix}:{{{bucket}}}"

    def wallet(self, account_id: str, credit_type: str) -> str:
        return f"{self._tag(self.bucket(account_id))}:w:{credit_type}:{account_id}"

    def account(self, account_id: str) -> str:
        """The account's settings as last set in Redis (lua/account_set.lua): a hydration
        racing a PATCH takes them over the SQL it read before the change."""
        return f"{self._tag(self.bucket(account_id))}:acct:{account_id}"

    def idempotency(self, account_id: str, key: str) -> str:
        # Scoped by account: the record must live in the account's slot.
        return f"{self._tag(self.bucket(account_id))}:i:{account_id}:{key}"

    def hold(self, bucket: int, hold_id: str) -> str:
        return f"{self._tag(bucket)}:h:{hold_id}"

    def charge(self, bucket: int, charge_id: str) -> str:
        return f"{self._tag(bucket)}:c:{charge_id}"

    def clawed(self, account_id: str, reference_id: str) -> str:
        """Credits clawed back so far for one purchase (a running total, SPEC §9)."""
        return f"{self._tag(self.bucket(account_id))}:cb:{account_id}:{reference_id}"

    def catalog(self, bucket: int) -> str:
        return f"{self._tag(bucket)}:tools"

    def journal(self, bucket: int) -> str:
        return f"{self._tag(bucket)}:journal"

    def due(self, bucket: int) -> str:
        return f"{self._tag(bucket)}:due"

    def events(self, bucket: int) -> str:
        # Pub/sub channel of balance events. Tagged like a key: scripts get it in KEYS (one
        # slot on Cluster), and it is a valid shard channel should we move to SPUBLISH.
        return f"{self._tag(bucket)}:events"

    def flush_lock(self, bucket: int) -> str:
        # Same slot as the journal: the flush_ack script checks the lock while it trims.
        return f"{self._tag(bucket)}:flushlock"

    def wallet_pattern(self, bucket: int) -> str:
        """SCAN pattern of every wallet hash of a bucket."""
        return f"{self._tag(bucket)}:w:*"

    def wallet_of(self, key: str) -> tuple[str, str]:
        """(account_id, credit_type) of a wallet key; credit types have no ':'."""
        rest = key.split(":w:", 1)[1]
        credit_type, account_id = rest.split(":", 1)
        return account_id, credit_type

    def flush_trigger(self) -> str:
        # Not bucketed: only the worker's trigger loop and flush jobs use it, as a plain key.
        return f"{self.prefix}:flush:queued"

    def epoch(self) -> str:
        # Not bucketed: written once per dataset; its absence means Redis lost everything.
        return f"{self.prefix}:epoch"

    def http_idempotency(self, key: str) -> str:
        # Hash tag = the key itself: one key per Idempotency-Key, deployment-wide (api/).
        return f"{self.prefix}:http-idem:{{{key}}}"

    def all_buckets(self) -> range:
        return range(self.buckets)

    def auth_failures(self, client: str) -> str:
        # Not bucketed: a plain counter (INCR/EXPIRE) per client address, no script touches it.
        return f"{self.prefix}:authfail:{client}"

    def admin_session(self, session_digest: str) -> str:
        # Not bucketed: the dashboard's login session, named by a hash of its cookie value.
        return f"{self.prefix}:admin-session:{session_digest}"

    def flush_progress(self) -> str:
        # Not bucketed: a hash the flusher writes after every committed batch and on every
        # failure (ok_at_ms, error, error_at_ms), so status and /readyz see a stalled flush.
        return f"{self.prefix}:flush:progress"

    def api_keys(self) -> str:
        # Not bucketed: the replica of live API keys (keyed hash -> id, prefix, scope) that
        # lets the API authenticate while SQL is down (issue 12).
        return f"{self.prefix}:apikeys"


def due_member(account_id: str, credit_type: str) -> str:
    """Member of a bucket's due set; credit types have no ':', so the split is unambiguous."""
    return f"{credit_type}:{account_id}"


def parse_due_member(member: str) -> tuple[str, str]:
    """(account_id, credit_type) of a due-set member."""
    credit_type, account_id = member.split(":", 1)
    return account_id, credit_type
