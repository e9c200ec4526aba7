"""Account tokens, and the auth dependencies through a small app of their own on real Redis
and real SQL (the HTTP tests of the real routes live beside this file)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Any

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from sqlalchemy import Engine

from api import auth, errors, tokens
from api.auth import (
    AUTH_FAILURE_WINDOW_S,
    AUTH_FAILURES_MAX,
    AccountReader,
    AdminKey,
    MeterKey,
    ReadKey,
    forget_cached_keys,
)
from api.state import AppState
from api.tokens import TOKEN_TTL_S_MAX, issue_token, verify_token
from meter import AsyncMeter
from meter.errors import InvalidArgument
from meter.keys import Keys
from meter.redis_conn import sync_client
from meter.times import now_ms as wall_ms
from sync import apikeys
from sync.apikeys import KeyReplica, create_key, looks_like_key, revoke_key
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.models import T_API_KEYS
from sync.settings import Settings

SECRET = b"test-secret-auth-unit"
NOW_MS = 1_800_000_000_000


# --- tokens -------------------------------------------------------------------------------


def test_a_token_names_its_account_until_it_expires() -> None:
    token, expires_at_ms = issue_token(SECRET, "user_1@x", 60, now_ms=NOW_MS)
    assert expires_at_ms == NOW_MS + 60_000
    assert token.startswith("cmt_") and tokens.is_token(token) and not looks_like_key(token)
    assert verify_token(SECRET, token, NOW_MS) == "user_1@x"
    assert verify_token(SECRET, token, expires_at_ms - 1) == "user_1@x"
    assert verify_token(SECRET, token, expires_at_ms) is None
    assert verify_token(b"other-secret", token, NOW_MS) is None


def test_default_and_longest_lifetimes() -> None:
    _, default_exp = issue_token(SECRET, "a", now_ms=NOW_MS)
    assert default_exp == NOW_MS + tokens.TOKEN_TTL_S_DEFAULT * 1000 == NOW_MS + 900_000
    _, max_exp = issue_token(SECRET, "a", TOKEN_TTL_S_MAX, now_ms=NOW_MS)
    assert max_exp == NOW_MS + 86_400_000
    for ttl in (0, -1, TOKEN_TTL_S_MAX + 1, True, 1.5, "60"):
        with pytest.raises(InvalidArgument, match="ttl_seconds"):
            issue_token(SECRET, "a", ttl, now_ms=NOW_MS)  # type: ignore[arg-type]
    for account in ("", "a b", "x" * 129, "é"):
        with pytest.raises(InvalidArgument, match="account_id"):
            issue_token(SECRET, account, now_ms=NOW_MS)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_tampered_token_is_refused() -> None:
    token, _ = issue_token(SECRET, "alice", 60, now_ms=NOW_MS)
    body, signature = token.split(".")
    exp = NOW_MS + 60_000
    for claims in ({"a": "bob", "e": exp}, {"a": "alice", "e": exp + 10**9}):
        forged = "cmt_" + _b64(json.dumps(claims, separators=(",", ":")).encode())
        assert verify_token(SECRET, f"{forged}.{signature}", NOW_MS) is None
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    for bad in (
        f"{body}.{flipped}",
        f"{body}.",
        body,
        f"{body}.{signature}x",
        f"{body}x.{signature}",
        "cmt_",
        "cmt_.",
        "cmt_é.é",
        "cmt_" + "A" * 600 + "." + signature,
        token.replace("cmt_", "cm_", 1),
        "",
    ):
        assert verify_token(SECRET, bad, NOW_MS) is None, bad


def test_well_signed_nonsense_claims_are_refused_not_crashed() -> None:
    """Only the secret's holder can sign these; the verifier still never raises."""
    signing = tokens._signature  # the same derivation a forger with the secret would use
    for payload in (b"not json", b"[1,2]", b'{"a":"x"}', b'{"a":1,"e":9e99}', b'{"a":"a b","e":1}'):
        body = "cmt_" + _b64(payload)
        assert verify_token(SECRET, f"{body}.{signing(SECRET, body)}", 0) is None
    body = "cmt_" + _b64(json.dumps({"a": "ok", "e": True}).encode())
    assert verify_token(SECRET, f"{body}.{signing(SECRET, body)}", 0) is None


def test_the_token_signature_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token, _ = issue_token(SECRET, "alice", 60, now_ms=NOW_MS)
    assert verify_token(SECRET, token, NOW_MS) == "alice"
    assert verify_token(SECRET, token[:-1] + "A", NOW_MS) in (None, "alice")
    assert len(calls) == 2


# --- dependencies through a small app -----------------------------------------------------


def _app(state: AppState) -> FastAPI:
    app = FastAPI()
    errors.install(app)
    app.state.cm = state

    @app.get("/read")
    async def read(p: ReadKey) -> dict[str, Any]:
        return asdict(p)

    @app.get("/meter")
    async def meter(p: MeterKey) -> dict[str, Any]:
        return asdict(p)

    @app.get("/admin")
    async def admin(p: AdminKey) -> dict[str, Any]:
        return asdict(p)

    @app.get("/v1/accounts/{account_id}/balance")
    async def balance(account_id: str, p: AccountReader) -> dict[str, Any]:
        return {"path": account_id, **asdict(p)}

    return app


def _state(
    redis_async: redis.asyncio.Redis, engine: Engine, keys: Keys, sql_url: str, redis_url: str
) -> AppState:
    settings = Settings(database_url=sql_url, secret_key=SECRET.decode(), key_prefix=keys.prefix)
    return AppState(
        settings=settings,
        keys=keys,
        redis_url=redis_url,
        redis=redis_async,
        meter=AsyncMeter(redis_async, keys=keys, loader=SqlLoader(engine, keys)),
        engine=engine,
        secret_key=SECRET,
    )


async def _finish(app: FastAPI) -> None:
    """Lets the background resync the requests started end before the loop closes."""
    task = auth._upkeep(app).task
    if task is not None:
        await task
    app.state.cm.sync_redis().close()


@pytest.fixture
async def app(
    redis_async: redis.asyncio.Redis, engine: Engine, keys: Keys, sql_url: str, redis_url: str
) -> AsyncIterator[FastAPI]:
    app = _app(_state(redis_async, engine, keys, sql_url, redis_url))
    yield app
    await _finish(app)


# Nothing listens on port 1: every connection is refused at once, as with a stopped server.
SQL_DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/creditmeter"


@pytest.fixture
async def sql_down_app(
    redis_async: redis.asyncio.Redis, keys: Keys, redis_url: str
) -> AsyncIterator[FastAPI]:
    """The same Redis and key names, with a SQL server that is down."""
    down = engine_for(SQL_DOWN_URL)
    app = _app(_state(redis_async, down, keys, SQL_DOWN_URL, redis_url))
    yield app
    await _finish(app)


@pytest.fixture
def replica(redis_url: str, keys: Keys) -> Iterator[KeyReplica]:
    client = sync_client(redis_url)
    try:
        yield KeyReplica(client, keys)
    finally:
        client.close()


def _client(app: FastAPI, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _key(engine: Engine, scope: str) -> str:
    return create_key(engine, SECRET, name=f"unit-{uuid.uuid4().hex[:6]}", scope=scope).plaintext


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["type"].startswith("urn:creditmeter:problem:")
    return body


async def test_missing_or_invalid_keys_are_401_with_a_bearer_challenge(
    app: FastAPI, engine: Engine
) -> None:
    key = _key(engine, "admin")
    async with _client(app) as c:
        for headers in (
            {},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer"},
            _bearer("nonsense"),
            _bearer(key[:-1] + ("a" if key[-1] != "a" else "b")),
            _bearer(key.upper()),
        ):
            r = await c.get("/read", headers=headers)
            _problem(r, 401)
            assert r.headers["www-authenticate"] == "Bearer"


async def test_scopes_admin_implies_meter_implies_read(app: FastAPI, engine: Engine) -> None:
    expected = {
        "read": {"/read": 200, "/meter": 403, "/admin": 403},
        "meter": {"/read": 200, "/meter": 200, "/admin": 403},
        "admin": {"/read": 200, "/meter": 200, "/admin": 200},
    }
    async with _client(app) as c:
        for scope, routes in expected.items():
            key = _key(engine, scope)
            for path, status in routes.items():
                r = await c.get(path, headers=_bearer(key))
                assert r.status_code == status, (scope, path, r.text)
                if status == 200:
                    body = r.json()
                    assert body["scope"] == scope and body["account_id"] is None
                    assert body["key_prefix"] == key[:14] and body["key_id"].startswith("key_")
                else:
                    assert _problem(r, 403)["required_scope"] == path[1:]


async def test_a_revoked_key_is_refused_once_the_cache_lets_go(
    app: FastAPI, engine: Engine, replica: KeyReplica
) -> None:
    created = create_key(engine, SECRET, name="to-revoke", scope="meter", replica=replica)
    async with _client(app) as c:
        assert (await c.get("/meter", headers=_bearer(created.plaintext))).status_code == 200
        revoke_key(engine, created.id, replica=replica)
        # Within KEY_CACHE_TTL_S this process still trusts what it verified...
        assert (await c.get("/meter", headers=_bearer(created.plaintext))).status_code == 200
        # ...and refuses it once the entry is gone (expired, or dropped as here).
        forget_cached_keys(app)
        _problem(await c.get("/meter", headers=_bearer(created.plaintext)), 401)
    cache = auth._cache(app)
    assert all(created.plaintext not in k for k in cache.entries)


async def test_the_key_cache_expires(app: FastAPI, engine: Engine, replica: KeyReplica) -> None:
    created = create_key(engine, SECRET, name="cache-ttl", scope="read", replica=replica)
    async with _client(app) as c:
        assert (await c.get("/read", headers=_bearer(created.plaintext))).status_code == 200
        revoke_key(engine, created.id, replica=replica)
        cache = auth._cache(app)
        cache.entries = {d: (0.0, info) for d, (_, info) in cache.entries.items()}  # time passes
        _problem(await c.get("/read", headers=_bearer(created.plaintext)), 401)


async def test_an_account_token_cannot_use_a_key_route(app: FastAPI, engine: Engine) -> None:
    token, _ = issue_token(SECRET, "alice", 60)
    expired, _ = issue_token(SECRET, "alice", 60, now_ms=wall_ms() - 61_000)
    async with _client(app) as c:
        for path in ("/read", "/meter", "/admin"):
            _problem(await c.get(path, headers=_bearer(token)), 403)
            _problem(await c.get(path, headers=_bearer(expired)), 401)


async def test_account_reader_takes_the_own_token_or_a_read_key(
    app: FastAPI, engine: Engine
) -> None:
    token, _ = issue_token(SECRET, "alice", 60)
    url = "/v1/accounts/alice/balance"
    async with _client(app) as c:
        for r in (
            await c.get(url, headers=_bearer(token)),
            await c.get(url, params={"token": token}),
        ):
            assert r.status_code == 200, r.text
            assert r.json() == {
                "path": "alice",
                "key_id": None,
                "key_prefix": None,
                "scope": "account",
                "account_id": "alice",
            }
        for scope in ("read", "meter", "admin"):
            r = await c.get(url, headers=_bearer(_key(engine, scope)))
            assert r.status_code == 200 and r.json()["scope"] == scope


async def test_account_reader_refuses_other_accounts_and_bad_tokens(
    app: FastAPI, engine: Engine
) -> None:
    bob, _ = issue_token(SECRET, "bob", 60)
    alice, _ = issue_token(SECRET, "alice", 60)
    expired, _ = issue_token(SECRET, "alice", 60, now_ms=wall_ms() - 61_000)
    forged, _ = issue_token(b"not-the-secret", "alice", 60)
    read_key = _key(engine, "read")
    url = "/v1/accounts/alice/balance"
    async with _client(app) as c:
        _problem(await c.get(url, headers=_bearer(bob)), 403)
        _problem(await c.get(url, params={"token": bob}), 403)
        _problem(await c.get("/v1/accounts/alice2/balance", headers=_bearer(alice)), 403)
        for bad in (expired, forged, alice[:-3]):
            _problem(await c.get(url, headers=_bearer(bad)), 401)
            _problem(await c.get(url, params={"token": bad}), 401)
        _problem(await c.get(url), 401)
        # API keys do not belong in URLs: refused there even when valid.
        body = _problem(await c.get(url, params={"token": read_key}), 401)
        assert "?token=" in body["detail"]
        # A valid header wins over the query parameter.
        ok = await c.get(url, headers=_bearer(read_key), params={"token": bob})
        assert ok.status_code == 200 and ok.json()["scope"] == "read"


async def test_repeated_failures_get_429_but_valid_keys_still_pass(
    app: FastAPI, engine: Engine, keys: Keys, redis_async: redis.asyncio.Redis
) -> None:
    good = _key(engine, "meter")
    async with _client(app, ip="10.1.1.1") as c, _client(app, ip="10.2.2.2") as other:
        for _ in range(AUTH_FAILURES_MAX):
            _problem(await c.get("/meter", headers=_bearer("wrong")), 401)
        ttl = await redis_async.ttl(keys.auth_failures("10.1.1.1"))
        assert 0 < ttl <= AUTH_FAILURE_WINDOW_S
        for path, params in (("/meter", {}), ("/v1/accounts/a/balance", {"token": "cmt_x.y"})):
            r = await c.get(path, params=params)
            _problem(r, 429)
            assert 1 <= int(r.headers["retry-after"]) <= AUTH_FAILURE_WINDOW_S
        assert (await c.get("/meter", headers=_bearer(good))).status_code == 200
        # Another client is not blocked by this one.
        _problem(await other.get("/meter", headers=_bearer("wrong")), 401)
    assert int(await redis_async.get(keys.auth_failures("10.2.2.2"))) == 1


async def test_forbidden_requests_do_not_count_as_failures(
    app: FastAPI, engine: Engine, keys: Keys, redis_async: redis.asyncio.Redis
) -> None:
    read_key = _key(engine, "read")
    token, _ = issue_token(SECRET, "bob", 60)
    async with _client(app, ip="10.3.3.3") as c:
        for _ in range(AUTH_FAILURES_MAX + 5):
            _problem(await c.get("/admin", headers=_bearer(read_key)), 403)
            _problem(await c.get("/v1/accounts/alice/balance", headers=_bearer(token)), 403)
        assert await redis_async.get(keys.auth_failures("10.3.3.3")) is None
        _problem(await c.get("/admin", headers=_bearer("wrong")), 401)


async def test_no_key_or_token_reaches_the_logs(
    app: FastAPI, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = _key(engine, "read")
    token, _ = issue_token(SECRET, "alice", 60)
    bad_key = key[:-1] + ("a" if key[-1] != "a" else "b")
    async with _client(app, ip="10.4.4.4") as c:
        await c.get("/read", headers=_bearer(key))
        await c.get("/read", headers=_bearer(bad_key))
        await c.get("/read", headers=_bearer(token))
        await c.get("/v1/accounts/bob/balance", params={"token": token})
        for _ in range(AUTH_FAILURES_MAX + 2):
            await c.get("/read", headers=_bearer(bad_key))
    # The test's own HTTP client logs its request URLs; everything else is the server side.
    server = "\n".join(
        f"{r.getMessage()} {r.args}" for r in caplog.records if not r.name.startswith("httpx")
    )
    assert "authentication failed" in server and "blocked" in server
    for secret in (key, key[14:], bad_key, bad_key[14:], token, token.split(".")[1]):
        assert secret not in server


def test_openapi_declares_a_bearer_scheme(app: FastAPI) -> None:
    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["type"] == "http" and schemes["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/read", "/v1/accounts/{account_id}/balance"):
        assert spec["paths"][path]["get"]["security"] == [{"HTTPBearer": []}]
    params = spec["paths"]["/v1/accounts/{account_id}/balance"]["get"]["parameters"]
    assert {p["name"] for p in params} == {"account_id", "token"}


def test_require_refuses_unknown_scopes() -> None:
    with pytest.raises(ValueError, match="scope"):
        auth.require("write")


# --- the key replica: authenticating without SQL (issue 12 item 1) ----------------------


async def test_revocation_takes_effect_within_the_cache_ttl_with_sql_up(
    app: FastAPI, engine: Engine, replica: KeyReplica
) -> None:
    """No cache reset by hand: a revocation made elsewhere reaches this process in time."""
    created = create_key(engine, SECRET, name="revoke-live", scope="meter", replica=replica)
    async with _client(app) as c:
        assert (await c.get("/meter", headers=_bearer(created.plaintext))).status_code == 200
        revoke_key(engine, created.id, replica=replica)
        revoked_at = time.monotonic()
        while (await c.get("/meter", headers=_bearer(created.plaintext))).status_code == 200:
            assert time.monotonic() - revoked_at < auth.KEY_CACHE_TTL_S + 0.5
            await asyncio.sleep(0.1)
        _problem(await c.get("/meter", headers=_bearer(created.plaintext)), 401)


async def test_keys_verify_from_the_replica_while_sql_is_down(
    app: FastAPI, sql_down_app: FastAPI, engine: Engine, replica: KeyReplica, keys: Keys
) -> None:
    made = create_key(engine, SECRET, name="outage", scope="meter", replica=replica)
    # A key the replica has not seen yet: the first request (SQL up) copies it there.
    late = create_key(engine, SECRET, name="outage-late", scope="read")
    revoked = create_key(engine, SECRET, name="outage-revoked", scope="read", replica=replica)
    revoke_key(engine, revoked.id, replica=replica)
    async with _client(app) as c:
        assert (await c.get("/read", headers=_bearer(late.plaintext))).status_code == 200
    await _finish(app)  # the first request's resync marked the replica complete
    assert replica.client.hexists(keys.api_keys(), apikeys.REPLICA_SYNCED_FIELD)
    unknown = made.plaintext[:-1] + ("a" if made.plaintext[-1] != "a" else "b")
    async with _client(sql_down_app) as c:
        for _ in range(3):
            r = await c.get("/meter", headers=_bearer(made.plaintext))
            assert r.status_code == 200 and r.json()["key_id"] == made.id, r.text
            assert (await c.get("/read", headers=_bearer(late.plaintext))).status_code == 200
            _problem(await c.get("/read", headers=_bearer(unknown)), 401)
            _problem(await c.get("/read", headers=_bearer(revoked.plaintext)), 401)
        assert (await c.get("/admin", headers=_bearer(made.plaintext))).status_code == 403


async def test_an_unmarked_replica_with_sql_down_answers_503_not_401(
    sql_down_app: FastAPI, engine: Engine, replica: KeyReplica, keys: Keys
) -> None:
    """Redis restarted empty during the outage: a miss cannot be told from an unknown key."""
    made = create_key(engine, SECRET, name="unmarked", scope="read")
    replica.client.delete(keys.api_keys())
    async with _client(sql_down_app) as c:
        body = _problem(await c.get("/read", headers=_bearer(made.plaintext)), 503)
        assert body["type"].endswith("database-unavailable")


async def test_last_use_is_written_by_the_resync_not_the_request(
    app: FastAPI, sql_down_app: FastAPI, engine: Engine, replica: KeyReplica
) -> None:
    made = create_key(engine, SECRET, name="last-use", scope="read", replica=replica)
    async with _client(sql_down_app) as c:  # a use during the outage: noted, not written
        assert (await c.get("/read", headers=_bearer(made.plaintext))).status_code == 200
    await _finish(sql_down_app)
    async with _client(app) as c:
        assert (await c.get("/read", headers=_bearer(made.plaintext))).status_code == 200
    await _finish(app)
    auth.resync_now(app.state.cm, app)  # the next round writes what the request noted
    with engine.connect() as conn:
        last = (
            conn.execute(T_API_KEYS.select().where(T_API_KEYS.c.id == made.id))
            .mappings()
            .one()["last_used_at_ms"]
        )
    assert last is not None and abs(last - wall_ms()) < 60_000
