"""API keys: created by `creditmeter keys create`, stored only as a keyed hash, verified by
the API on every request (through its short in-process cache, see api/auth.py).

SQL is the record of keys; the balance Redis holds a replica of the live ones
(`Keys.api_keys()`: field = the keyed hash, value = id, prefix and scope, never the key), so
the API authenticates while SQL is down. `create_key` writes SQL, then the replica;
`revoke_key` writes SQL, then deletes the replica entry (so every API process refuses the key
once its KEY_CACHE_TTL_S cache lets go). `resync_replica` makes the replica equal to SQL's live
keys (adds what is missing, removes what SQL has revoked or never had) and marks it complete
with REPLICA_SYNCED_FIELD; the API runs it at start and every KEY_RESYNC_INTERVAL_S while SQL
answers, so a key made or revoked while Redis was unreachable converges. A replica without
that mark (Redis restarted empty) is not trusted to say "unknown": see api/auth.py.

A key is `cm_live_` followed by 48 random base62 characters (~285 bits). SQL keeps the
HMAC-SHA256 of the whole key under the service secret (`sync.secret`), never the key, and the
first 14 characters as a visible prefix, so `keys list` can show which key is which and
`keys revoke` can name one. A stolen database therefore yields no usable key, and without
the secret not even an offline guess can be checked.

Scopes, from least to most: `read` < `meter` < `admin`. `admin` implies both others (SPEC §7).
`meter` implies `read`: a backend that may charge an account needs to read its balance (to
show it, or to decide before a long generation), as a Stripe secret key that can create
charges can also retrieve them. A `read` key can never change money.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Final

import redis
from sqlalchemy import Engine, or_, select
from sqlalchemy.engine import Connection

from meter.keys import Keys
from meter.ops import as_text
from meter.times import now_ms as wall_ms
from sync import audit
from sync.db import write_transaction
from sync.models import T_API_KEYS

KEY_MARKER: Final = "cm_live_"  # Tells a key from an account token (`cmt_`) and from noise.
KEY_RANDOM_CHARS: Final = 48  # 48 base62 chars = 285 bits; the 6 in the prefix leave 250.
KEY_LEN: Final = len(KEY_MARKER) + KEY_RANDOM_CHARS
PREFIX_LEN: Final = 14  # Marker + 6 random chars: names a key among millions; fits String(16).
NAME_LEN_MAX: Final = 64  # Shown in one table column.
LAST_USED_RESOLUTION_MS: Final = 60_000  # last_used_at_ms is written at most once a minute
# per key: a write per request would queue every charge behind SQLite's write lock.
SCOPES: Final = ("read", "meter", "admin")
AUDIT_ACTOR_CLI: Final = "cli"
KEY_RESYNC_INTERVAL_S: Final = 5.0  # Bounds how long the replica can disagree with SQL (a
# revocation whose replica delete failed, a key made while Redis was down); one small SELECT.
REPLICA_SYNCED_FIELD: Final = "synced_at_ms"  # Not hex, so never a key's hash: the replica's
# completeness mark, written only by a full resync.
# A key created or revoked between a resync's read and its write makes it start over; this
# many in a row (a burst of key changes) and the next round (KEY_RESYNC_INTERVAL_S) does it.
RESYNC_ATTEMPTS_MAX: Final = 3
_REPLICA_SEP: Final = " "  # ids, prefixes and scopes never hold a space

log = logging.getLogger("creditmeter.apikeys")

_ALPHABET = string.ascii_letters + string.digits
_ALPHABET_SET = frozenset(_ALPHABET)
_IMPLIED: Final[dict[str, frozenset[str]]] = {
    "read": frozenset({"read"}),
    "meter": frozenset({"meter", "read"}),
    "admin": frozenset({"admin", "meter", "read"}),
}


class ApiKeyNotFound(LookupError):
    """No key has that id or prefix."""


class ApiKeyAmbiguous(LookupError):
    """Several keys share that prefix; name one by its id."""


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key, never its hash."""

    id: str
    name: str
    prefix: str
    scope: str
    created_at_ms: int
    revoked_at_ms: int | None
    last_used_at_ms: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at_ms is not None


@dataclass(frozen=True)
class CreatedKey:
    """A new key: `plaintext` exists only here, once (kept out of repr and so of logs)."""

    id: str
    name: str
    prefix: str
    scope: str
    created_at_ms: int
    plaintext: str = field(repr=False)


def scope_allows(held: str, required: str) -> bool:
    """Whether a key of scope `held` may call a route that needs `required`."""
    assert required in _IMPLIED, required
    return required in _IMPLIED.get(held, frozenset())


def key_hash(secret_key: bytes, presented: str) -> str:
    """HMAC-SHA256 of the key under the service secret, hex: what SQL stores."""
    return hmac.new(secret_key, presented.encode(), hashlib.sha256).hexdigest()


def looks_like_key(presented: str) -> bool:
    """Shape check before any hashing or SQL: marker, length, base62 tail."""
    return (
        len(presented) == KEY_LEN
        and presented.startswith(KEY_MARKER)
        and _ALPHABET_SET.issuperset(presented[len(KEY_MARKER) :])
    )


def _check(name: str, scope: str) -> None:
    if not 1 <= len(name) <= NAME_LEN_MAX or not name.isprintable() or not name.strip():
        raise ValueError(f"key name must be 1-{NAME_LEN_MAX} printable characters, not blank")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")


def _info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scope=row.scope,
        created_at_ms=row.created_at_ms,
        revoked_at_ms=row.revoked_at_ms,
        last_used_at_ms=row.last_used_at_ms,
    )


_INFO_COLUMNS = (
    T_API_KEYS.c.id,
    T_API_KEYS.c.name,
    T_API_KEYS.c.prefix,
    T_API_KEYS.c.scope,
    T_API_KEYS.c.created_at_ms,
    T_API_KEYS.c.revoked_at_ms,
    T_API_KEYS.c.last_used_at_ms,
)


@dataclass(frozen=True)
class KeyReplica:
    """Where live keys are copied: the balance Redis (a sync client) and its key names."""

    client: redis.Redis
    keys: Keys

    @property
    def name(self) -> str:
        return self.keys.api_keys()


@dataclass(frozen=True)
class ReplicatedKey:
    """A replica entry: what authenticating needs, nothing that could be used as a key."""

    id: str
    prefix: str
    scope: str


@dataclass(frozen=True)
class ResyncResult:
    live: int
    added: int
    removed: int


class ReplicaBusy(RuntimeError):
    """The key replica kept changing while a resync read SQL: left to the next round."""


def replica_value(key_id: str, prefix: str, scope: str) -> str:
    return _REPLICA_SEP.join((key_id, prefix, scope))


def parse_replica_value(raw: object) -> ReplicatedKey | None:
    """The entry, or None for a value this version did not write (then SQL decides)."""
    parts = as_text(raw).split(_REPLICA_SEP)
    if len(parts) != 3 or parts[2] not in SCOPES:
        return None
    return ReplicatedKey(*parts)


def _replica_write(replica: KeyReplica | None, what: str, fn: Any) -> None:
    """Best effort: SQL already holds the change, and the API's resync (every
    KEY_RESYNC_INTERVAL_S while SQL answers) copies it if Redis could not take it now."""
    if replica is None:
        return
    try:
        fn(replica.client, replica.name)
    except redis.RedisError as exc:
        log.warning(
            "key replica not updated (%s: %s); the API resyncs it within %s s of Redis answering",
            what,
            type(exc).__name__,
            KEY_RESYNC_INTERVAL_S,
        )


def _live_keys(engine: Engine) -> dict[str, str]:
    """SQL's live keys as the replica holds them: {keyed hash: value}."""
    query = select(
        T_API_KEYS.c.key_hash, T_API_KEYS.c.id, T_API_KEYS.c.prefix, T_API_KEYS.c.scope
    ).where(T_API_KEYS.c.revoked_at_ms.is_(None))
    with engine.connect() as conn:
        return {r.key_hash: replica_value(r.id, r.prefix, r.scope) for r in conn.execute(query)}


def resync_replica(
    engine: Engine, replica: KeyReplica, *, now_ms: int | None = None
) -> ResyncResult:
    """Makes the replica hold exactly SQL's live keys, then marks it complete.

    Raises SQLAlchemy's error when SQL is down (the replica stays as it is: its entries were
    all live when written, and no key can be revoked while SQL is down) and redis' when Redis
    is. The replica is WATCHed before SQL is read: a revocation (or creation) whose replica
    write lands between that read and this write aborts the write, and the resync starts
    over, so it never puts back a key revoked meanwhile, not even for a moment. Past
    RESYNC_ATTEMPTS_MAX such races the replica is left to the next round (ReplicaBusy).
    """
    for _ in range(RESYNC_ATTEMPTS_MAX):
        with replica.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(replica.name)
                held = {
                    as_text(field_): as_text(value)
                    for field_, value in pipe.hgetall(replica.name).items()
                }
                live = _live_keys(engine)
                held.pop(REPLICA_SYNCED_FIELD, None)
                added = {d: value for d, value in live.items() if held.get(d) != value}
                removed = [digest for digest in held if digest not in live]
                synced_at_ms = wall_ms() if now_ms is None else now_ms
                pipe.multi()
                if removed:
                    pipe.hdel(replica.name, *removed)
                complete: dict[Any, Any] = {**added, REPLICA_SYNCED_FIELD: str(synced_at_ms)}
                pipe.hset(replica.name, mapping=complete)
                pipe.execute()
            except redis.WatchError:
                continue
        return ResyncResult(live=len(live), added=len(added), removed=len(removed))
    raise ReplicaBusy(f"the key replica changed under {RESYNC_ATTEMPTS_MAX} resyncs in a row")


def replicate(replica: KeyReplica | None, digest: str, info: ApiKeyInfo) -> None:
    """Copies one live key verified in SQL to the replica (best effort)."""
    value = replica_value(info.id, info.prefix, info.scope)
    _replica_write(replica, f"add {info.prefix}", lambda c, n: c.hset(n, digest, value))


def record_last_use(engine: Engine, used_at_ms: dict[str, int]) -> None:
    """Writes each key's last use ({key id: ms}), skipping keys written within
    LAST_USED_RESOLUTION_MS: run off the request path (the API batches uses per process)."""

    def txn(conn: Connection) -> None:
        for key_id, at in used_at_ms.items():
            stale = or_(
                T_API_KEYS.c.last_used_at_ms.is_(None),
                T_API_KEYS.c.last_used_at_ms <= at - LAST_USED_RESOLUTION_MS,
            )
            conn.execute(
                T_API_KEYS.update()
                .where(T_API_KEYS.c.id == key_id, stale)
                .values(last_used_at_ms=at)
            )

    if used_at_ms:
        write_transaction(engine, txn)


def create_key(
    engine: Engine,
    secret_key: bytes,
    *,
    name: str,
    scope: str,
    replica: KeyReplica | None = None,
) -> CreatedKey:
    """Makes a key, stores its hash and prefix, audits it, then copies it to the replica (best
    effort: the API finds a key missing there in SQL); the caller shows `plaintext` once."""
    _check(name, scope)
    plaintext = KEY_MARKER + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_RANDOM_CHARS))
    assert looks_like_key(plaintext)
    created = CreatedKey(
        id="key_" + uuid.uuid4().hex[:16],
        name=name,
        prefix=plaintext[:PREFIX_LEN],
        scope=scope,
        created_at_ms=wall_ms(),
        plaintext=plaintext,
    )

    def txn(conn: Connection) -> None:
        conn.execute(
            T_API_KEYS.insert(),
            {
                "id": created.id,
                "name": name,
                "prefix": created.prefix,
                "key_hash": key_hash(secret_key, plaintext),
                "scope": scope,
                "created_at_ms": created.created_at_ms,
            },
        )
        detail = {"name": name, "scope": scope, "prefix": created.prefix}
        audit.record_in(conn, AUDIT_ACTOR_CLI, "api_key.create", created.id, detail)

    write_transaction(engine, txn)
    digest = key_hash(secret_key, plaintext)
    value = replica_value(created.id, created.prefix, scope)
    _replica_write(replica, f"add {created.prefix}", lambda c, n: c.hset(n, digest, value))
    return created


def list_keys(engine: Engine) -> list[ApiKeyInfo]:
    """Every key, revoked ones included, oldest first."""
    query = select(*_INFO_COLUMNS).order_by(T_API_KEYS.c.created_at_ms, T_API_KEYS.c.id)
    with engine.connect() as conn:
        return [_info(row) for row in conn.execute(query)]


def revoke_key(
    engine: Engine, key_id_or_prefix: str, *, replica: KeyReplica | None = None
) -> ApiKeyInfo:
    """Revokes the key with that id or visible prefix, then deletes it from the replica (also
    when it was already revoked: a replica that missed the first delete catches up). Revoking
    a revoked key changes nothing in SQL and answers it as it is. Raises ApiKeyNotFound or
    ApiKeyAmbiguous."""
    wanted = key_id_or_prefix.strip()
    if not wanted:
        raise ApiKeyNotFound("give a key id or prefix")

    def txn(conn: Connection) -> tuple[ApiKeyInfo, str]:
        query = select(*_INFO_COLUMNS, T_API_KEYS.c.key_hash).where(
            or_(T_API_KEYS.c.id == wanted, T_API_KEYS.c.prefix == wanted)
        )
        rows = conn.execute(query.limit(10)).all()
        if not rows:
            raise ApiKeyNotFound(f"no API key has id or prefix {wanted!r}")
        if len(rows) > 1:
            ids = ", ".join(sorted(r.id for r in rows))
            raise ApiKeyAmbiguous(f"prefix {wanted!r} names several keys ({ids}); give the id")
        info, digest = _info(rows[0]), rows[0].key_hash
        if info.revoked:
            return info, digest
        at = wall_ms()
        conn.execute(T_API_KEYS.update().where(T_API_KEYS.c.id == info.id).values(revoked_at_ms=at))
        audit.record_in(
            conn,
            AUDIT_ACTOR_CLI,
            "api_key.revoke",
            info.id,
            {"name": info.name, "prefix": info.prefix},
        )
        return replace(info, revoked_at_ms=at), digest

    revoked, digest = write_transaction(engine, txn)
    _replica_write(replica, f"revoke {revoked.prefix}", lambda c, n: c.hdel(n, digest))
    return revoked


def live_key(engine: Engine, key_id: str) -> ApiKeyInfo | None:
    """The key with this id if it exists and is not revoked (a dashboard session re-checks its
    key on every request, so revoking the key ends the session)."""
    with engine.connect() as conn:
        row = conn.execute(select(*_INFO_COLUMNS).where(T_API_KEYS.c.id == key_id)).first()
    if row is None:
        return None
    info = _info(row)
    return None if info.revoked else info


def verify_key(
    engine: Engine,
    secret_key: bytes,
    presented: str,
    *,
    now_ms: int | None = None,
    record_use: bool = True,
) -> ApiKeyInfo | None:
    """The key's info if `presented` is a live key, else None (unknown, malformed, revoked).

    Looked up by its keyed hash, then the stored hash compared with hmac.compare_digest (the
    index lookup's timing can only tell about an HMAC an attacker cannot compute). Records
    last use at most once per LAST_USED_RESOLUTION_MS, unless `record_use` is off (the API
    records uses off the request path, see record_last_use).
    """
    if not looks_like_key(presented):
        return None
    digest = key_hash(secret_key, presented)
    now = wall_ms() if now_ms is None else now_ms
    query = select(*_INFO_COLUMNS, T_API_KEYS.c.key_hash).where(T_API_KEYS.c.key_hash == digest)

    # A plain read: the write transaction (SQLite's write lock) is taken only when last use
    # is due to be recorded, about once a minute per key.
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    info = _info(row)
    if info.revoked:
        return None
    last = info.last_used_at_ms
    if not record_use or (last is not None and now - last < LAST_USED_RESOLUTION_MS):
        return info

    def write_use(conn: Connection) -> None:
        # The guard makes concurrent API processes write once, not once each.
        stale = or_(
            T_API_KEYS.c.last_used_at_ms.is_(None),
            T_API_KEYS.c.last_used_at_ms <= now - LAST_USED_RESOLUTION_MS,
        )
        conn.execute(
            T_API_KEYS.update().where(T_API_KEYS.c.id == info.id, stale).values(last_used_at_ms=now)
        )

    write_transaction(engine, write_use)
    return replace(info, last_used_at_ms=now)
