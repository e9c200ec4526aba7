"""API keys in SQL: only a keyed hash at rest, verified in constant time, revocable, audited.

The SQL database is shared by the whole suite, so every test looks only at its own keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, event, select

from meter.keys import Keys
from sync import apikeys
from sync.apikeys import (
    KEY_LEN,
    PREFIX_LEN,
    ApiKeyAmbiguous,
    ApiKeyNotFound,
    create_key,
    list_keys,
    looks_like_key,
    revoke_key,
    scope_allows,
    verify_key,
)
from sync.models import T_API_KEYS, T_AUDIT

SECRET = b"test-secret-apikeys"


def _name() -> str:
    return f"k-{uuid.uuid4().hex[:8]}"


def _rows(engine: Engine, key_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with engine.connect() as conn:
        key = conn.execute(select(T_API_KEYS).where(T_API_KEYS.c.id == key_id)).mappings().one()
        audit = conn.execute(
            select(T_AUDIT).where(T_AUDIT.c.target == key_id).order_by(T_AUDIT.c.id)
        ).mappings()
        return dict(key), [dict(r) for r in audit]


def test_only_a_keyed_hash_is_stored_and_the_plaintext_nowhere(engine: Engine) -> None:
    created = create_key(engine, SECRET, name=_name(), scope="meter")
    key, audit = _rows(engine, created.id)
    assert looks_like_key(created.plaintext) and len(created.plaintext) == KEY_LEN
    assert key["key_hash"] == hmac.new(SECRET, created.plaintext.encode(), "sha256").hexdigest()
    assert key["prefix"] == created.plaintext[:PREFIX_LEN] == created.prefix
    for row in (key, *audit):
        for value in row.values():
            assert created.plaintext not in str(value)
            # Nor the secret part alone, nor an unkeyed hash of the key.
            assert created.plaintext[PREFIX_LEN:] not in str(value)
            assert hashlib.sha256(created.plaintext.encode()).hexdigest() != str(value)
    assert created.plaintext not in repr(created)
    assert [(a["actor"], a["action"]) for a in audit] == [("cli", "api_key.create")]
    assert json.loads(audit[0]["detail"]) == {
        "name": created.name,
        "scope": "meter",
        "prefix": created.prefix,
    }


def test_two_keys_never_share_a_hash_or_prefix(engine: Engine) -> None:
    a = create_key(engine, SECRET, name=_name(), scope="read")
    b = create_key(engine, SECRET, name=_name(), scope="read")
    assert a.plaintext != b.plaintext and a.prefix != b.prefix and a.id != b.id


def test_verify_answers_the_key_and_nothing_else(engine: Engine) -> None:
    created = create_key(engine, SECRET, name=_name(), scope="admin")
    info = verify_key(engine, SECRET, created.plaintext)
    assert info is not None
    assert (info.id, info.name, info.scope, info.prefix) == (
        created.id,
        created.name,
        "admin",
        created.prefix,
    )
    assert not hasattr(info, "key_hash")
    flipped = created.plaintext[:-1] + ("a" if created.plaintext[-1] != "a" else "b")
    for wrong in (
        flipped,
        created.plaintext + "x",
        created.plaintext[:-1],
        created.prefix,
        "",
        " " + created.plaintext[1:],
        "cmt_" + created.plaintext[4:],
    ):
        assert verify_key(engine, SECRET, wrong) is None, wrong
    assert verify_key(engine, b"another-secret", created.plaintext) is None


def test_the_stored_hash_is_compared_in_constant_time(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = create_key(engine, SECRET, name=_name(), scope="read")
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    assert verify_key(engine, SECRET, created.plaintext) is not None
    digest = apikeys.key_hash(SECRET, created.plaintext)
    assert calls == [(digest, digest)]


def test_last_use_is_written_at_most_once_a_minute(engine: Engine) -> None:
    created = create_key(engine, SECRET, name=_name(), scope="read")
    t0 = created.created_at_ms + 1_000
    assert _rows(engine, created.id)[0]["last_used_at_ms"] is None
    info = verify_key(engine, SECRET, created.plaintext, now_ms=t0)
    assert info is not None and info.last_used_at_ms == t0
    step = apikeys.LAST_USED_RESOLUTION_MS
    verify_key(engine, SECRET, created.plaintext, now_ms=t0 + step - 1)
    assert _rows(engine, created.id)[0]["last_used_at_ms"] == t0
    verify_key(engine, SECRET, created.plaintext, now_ms=t0 + step)
    assert _rows(engine, created.id)[0]["last_used_at_ms"] == t0 + step


def test_revoke_by_id_or_prefix_stops_verification_and_is_audited_once(engine: Engine) -> None:
    by_id = create_key(engine, SECRET, name=_name(), scope="meter")
    by_prefix = create_key(engine, SECRET, name=_name(), scope="meter")
    revoked = revoke_key(engine, by_id.id)
    assert revoked.id == by_id.id and revoked.revoked and revoked.revoked_at_ms is not None
    assert revoke_key(engine, by_prefix.prefix).id == by_prefix.id
    for created in (by_id, by_prefix):
        assert verify_key(engine, SECRET, created.plaintext) is None
    again = revoke_key(engine, by_id.id)  # idempotent: same time, no second audit row
    assert again.revoked_at_ms == revoked.revoked_at_ms
    _, audit = _rows(engine, by_id.id)
    assert [a["action"] for a in audit] == ["api_key.create", "api_key.revoke"]
    assert all(a["actor"] == "cli" for a in audit)
    listed = {k.id: k for k in list_keys(engine)}
    assert listed[by_id.id].revoked and listed[by_prefix.id].revoked


def test_revoke_names_exactly_one_key(engine: Engine) -> None:
    created = create_key(engine, SECRET, name=_name(), scope="read")
    with pytest.raises(ApiKeyNotFound):
        revoke_key(engine, "key_" + uuid.uuid4().hex[:16])
    with pytest.raises(ApiKeyNotFound):
        revoke_key(engine, "  ")
    with pytest.raises(ApiKeyNotFound):
        revoke_key(engine, created.prefix[:-1])  # a prefix is named whole, never guessed at
    # A second row with the same visible prefix (a 1 in 62**6 chance, forced here).
    twin = {
        "id": "key_" + uuid.uuid4().hex[:16],
        "name": "twin",
        "prefix": created.prefix,
        "key_hash": uuid.uuid4().hex,
        "scope": "read",
        "created_at_ms": created.created_at_ms,
    }
    with engine.begin() as conn:
        conn.execute(T_API_KEYS.insert(), twin)
    with pytest.raises(ApiKeyAmbiguous, match=created.id):
        revoke_key(engine, created.prefix)
    assert verify_key(engine, SECRET, created.plaintext) is not None
    assert revoke_key(engine, created.id).revoked


def test_list_shows_keys_without_secrets(engine: Engine) -> None:
    created = create_key(engine, SECRET, name=_name(), scope="admin")
    listed = [k for k in list_keys(engine) if k.id == created.id]
    assert len(listed) == 1
    info = listed[0]
    assert (info.name, info.prefix, info.scope, info.revoked_at_ms) == (
        created.name,
        created.prefix,
        "admin",
        None,
    )
    assert created.plaintext not in repr(info)


@pytest.mark.parametrize(
    ("name", "scope", "message"),
    [
        ("", "read", "name"),
        (" ", "read", "name"),
        ("x" * 65, "read", "name"),
        ("line\nbreak", "read", "name"),
        ("ok", "write", "scope"),
        ("ok", "", "scope"),
        ("ok", "ADMIN", "scope"),
    ],
)
def test_bad_names_and_scopes_are_refused_before_writing(
    engine: Engine, name: str, scope: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_key(engine, SECRET, name=name, scope=scope)


def test_a_64_character_name_is_accepted(engine: Engine) -> None:
    name = uuid.uuid4().hex * 2
    assert create_key(engine, SECRET, name=name, scope="read").name == name


def test_scopes_imply_lesser_scopes() -> None:
    allowed = {(h, r) for h in apikeys.SCOPES for r in apikeys.SCOPES if scope_allows(h, r)}
    assert allowed == {
        ("read", "read"),
        ("meter", "read"),
        ("meter", "meter"),
        ("admin", "read"),
        ("admin", "meter"),
        ("admin", "admin"),
    }
    assert not scope_allows("account", "read")


# --- the replica of live keys in Redis (issue 12: authenticating while SQL is down) -------


def _replica(client: redis.Redis, keys: Keys) -> apikeys.KeyReplica:
    return apikeys.KeyReplica(client, keys)


def _held(client: redis.Redis, keys: Keys) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.api_keys()).items()}


def test_create_copies_the_key_to_the_replica_and_revoke_deletes_it(
    engine: Engine, client: redis.Redis, keys: Keys
) -> None:
    replica = _replica(client, keys)
    created = create_key(engine, SECRET, name=_name(), scope="meter", replica=replica)
    digest = apikeys.key_hash(SECRET, created.plaintext)
    value = _held(client, keys)[digest]
    assert apikeys.parse_replica_value(value) == apikeys.ReplicatedKey(
        created.id, created.prefix, "meter"
    )
    assert created.plaintext not in value and created.plaintext[PREFIX_LEN:] not in value
    revoke_key(engine, created.prefix, replica=replica)
    assert digest not in _held(client, keys)


def test_a_replica_write_that_fails_leaves_sql_done_and_resync_repairs_it(
    engine: Engine, client: redis.Redis, keys: Keys
) -> None:
    dead = _replica(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2), keys)
    made = create_key(engine, SECRET, name=_name(), scope="read", replica=dead)
    assert verify_key(engine, SECRET, made.plaintext) is not None  # SQL has it
    assert apikeys.key_hash(SECRET, made.plaintext) not in _held(client, keys)
    replica = _replica(client, keys)
    revoked = create_key(engine, SECRET, name=_name(), scope="read", replica=replica)
    revoke_key(engine, revoked.id, replica=dead)  # the delete never reaches Redis
    assert apikeys.key_hash(SECRET, revoked.plaintext) in _held(client, keys)
    apikeys.resync_replica(engine, replica)
    held = _held(client, keys)
    assert apikeys.key_hash(SECRET, made.plaintext) in held
    assert apikeys.key_hash(SECRET, revoked.plaintext) not in held


def test_resync_holds_the_live_keys_only_and_marks_the_replica_complete(
    engine: Engine, client: redis.Redis, keys: Keys
) -> None:
    """Other tests create and revoke keys in the same SQL meanwhile: only this test's keys
    are compared one by one."""
    replica = _replica(client, keys)
    live = create_key(engine, SECRET, name=_name(), scope="admin")
    revoked = create_key(engine, SECRET, name=_name(), scope="read", replica=replica)
    revoke_key(engine, revoked.id)  # no replica given: its entry stays until the resync
    unknown = "ab" * 32  # a hash SQL never had (a replica from another secret, say)
    client.hset(keys.api_keys(), unknown, "key_x cm_live_xxxxxx admin")
    result = apikeys.resync_replica(engine, replica, now_ms=1234)
    held = _held(client, keys)
    assert held.pop(apikeys.REPLICA_SYNCED_FIELD) == "1234"
    assert held[apikeys.key_hash(SECRET, live.plaintext)] == apikeys.replica_value(
        live.id, live.prefix, "admin"
    )
    assert unknown not in held and apikeys.key_hash(SECRET, revoked.plaintext) not in held
    assert result.removed >= 2 and result.added >= 1


def test_last_use_is_recorded_off_the_request_path_once_per_resolution(engine: Engine) -> None:
    created = create_key(engine, SECRET, name=_name(), scope="read")
    info = verify_key(engine, SECRET, created.plaintext, record_use=False)
    assert info is not None and info.last_used_at_ms is None
    assert _rows(engine, created.id)[0]["last_used_at_ms"] is None
    apikeys.record_last_use(engine, {created.id: 1_000_000})
    apikeys.record_last_use(engine, {created.id: 1_000_000 + apikeys.LAST_USED_RESOLUTION_MS - 1})
    assert _rows(engine, created.id)[0]["last_used_at_ms"] == 1_000_000
    later = 1_000_000 + apikeys.LAST_USED_RESOLUTION_MS
    apikeys.record_last_use(engine, {created.id: later})
    assert _rows(engine, created.id)[0]["last_used_at_ms"] == later


def test_a_revocation_during_a_resync_is_never_undone_even_for_a_moment(
    engine: Engine, client: redis.Redis, keys: Keys
) -> None:
    """The key is revoked (SQL, then its replica delete) just after the resync has read SQL's
    live keys, which still list it (the revocation runs when that read's connection goes back
    to the pool). From then on the replica must never hold it again: checked each time a
    connection goes back to the pool, and at the end."""
    replica = _replica(client, keys)
    doomed = create_key(engine, SECRET, name=_name(), scope="meter", replica=replica)
    digest = apikeys.key_hash(SECRET, doomed.plaintext)
    seen_after_revoke: list[bool] = []
    state = {"revoking": False, "revoked": False}

    def on_checkin(*_: Any) -> None:
        if state["revoked"]:
            seen_after_revoke.append(bool(client.hexists(keys.api_keys(), digest)))
        elif not state["revoking"]:  # the revocation's own connections come back meanwhile
            state["revoking"] = True
            revoke_key(engine, doomed.id, replica=replica)
            state["revoked"] = True

    event.listen(engine, "checkin", on_checkin)
    try:
        apikeys.resync_replica(engine, replica)
    finally:
        event.remove(engine, "checkin", on_checkin)
    seen_after_revoke.append(bool(client.hexists(keys.api_keys(), digest)))
    assert state["revoked"] and not any(seen_after_revoke), seen_after_revoke
