"""Issue 12 item 5: text PostgreSQL cannot store is refused before any Redis call.

Before the fix a NUL in a description, reason, reference id or tool name was answered 201
and moved the balance, then the flush dead-lettered the entry: acknowledged money that never
reached SQL. Each case here sends one bad text (NUL, a lone surrogate sent as the JSON
escape "\\ud800", and one character over the limit written in 3-byte characters) in one
field, through the HTTP API and the in-process Meter, and checks: 422 (InvalidArgument)
naming the field, the balance, the journal and the idempotency records unchanged. Multibyte
text of exactly the limit (counted in characters, as PostgreSQL's varchar(n) counts) is
accepted and flushes to PostgreSQL with no dead letter. The Lua scripts refuse the same
bytes on their own (invalid UTF-8, NUL, CESU-8 surrogates, one character too many).

PostgreSQL: the suite's when it runs on one, else a private cluster; Redis: private.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from sqlalchemy import Engine, select

from meter import InvalidArgument, Keys, Meter, Tool, bounds, ops, scripts
from meter.errors import Code
from meter.redis_conn import sync_client
from sync.apikeys import create_key
from sync.catalog import save_tools
from sync.db import engine_for
from sync.flush import Flusher
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.models import T_DEAD, T_LEDGER, T_TOOLS
from tests.api.server import running_api, server_env
from tests.api.test_admin_dashboard import login
from tests.servers import PrivatePostgres, private_redis
from tests.sql_databases import is_postgres

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

HTTP_TIMEOUT_S = 10.0
WIDE = "€"  # U+20AC: 1 character, 3 bytes in UTF-8
DESC, REF, NAME = bounds.DESCRIPTION_LEN_MAX, bounds.REFERENCE_LEN_MAX, 255


def bad_texts(max_chars: int | None) -> dict[str, str]:
    out = {"nul": "a\x00b", "surrogate": "\ud800"}
    if max_chars is not None:
        out["oversize"] = WIDE * (max_chars + 1)
    return out


# --- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url(sql_url: str) -> Iterator[str]:
    if is_postgres(sql_url):
        yield sql_url
        return
    with PrivatePostgres() as pg:
        upgrade(pg.url)
        yield pg.url


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = private_redis(tmp_path_factory.mktemp("redis"), appendonly=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg(pg_url: str) -> Engine:
    return engine_for(pg_url)


@pytest.fixture(scope="module")
def rc(redis_server: str) -> Iterator[redis.Redis]:
    client = sync_client(redis_server)
    try:
        yield client
    finally:
        client.close()


def journal_len(rc: redis.Redis, keys: Keys) -> int:
    return sum(int(rc.xlen(keys.journal(b))) for b in keys.all_buckets())


def flush_and_assert_no_dead_letter(rc: redis.Redis, pg: Engine, keys: Keys) -> None:
    Flusher(rc, pg, keys).flush_all()
    journals = [keys.journal(b) for b in keys.all_buckets()]
    with pg.connect() as conn:
        dead = conn.execute(select(T_DEAD.c.error).where(T_DEAD.c.journal.in_(journals))).all()
    assert dead == []
    assert journal_len(rc, keys) == 0 or all(
        rc.xinfo_groups(j) == [] or rc.xinfo_groups(j)[0]["pending"] == 0 for j in journals
    )


def ledger_texts(pg: Engine, account_id: str) -> set[str]:
    with pg.connect() as conn:
        rows = conn.execute(
            select(T_LEDGER.c.description, T_LEDGER.c.reference_id, T_LEDGER.c.metadata).where(
                T_LEDGER.c.account_id == account_id
            )
        ).all()
    return {v for row in rows for v in row if v}


# --- HTTP ----------------------------------------------------------------------------------


@dataclass
class Api:
    http: httpx.Client
    keys: Keys
    auth: dict[str, str]
    account: str
    tool: str
    hold_id: str
    charge_id: str
    url: str
    admin_key: str


@pytest.fixture(scope="module")
def api(
    redis_server: str, pg_url: str, pg: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    prefix = "b" + uuid.uuid4().hex[:10]
    data_dir = tmp_path_factory.mktemp("api")
    env = server_env(redis_server, pg_url, prefix, data_dir)
    key = create_key(
        pg, env["CREDITMETER_SECRET_KEY"].encode(), name=f"bad-text-{prefix}", scope="admin"
    ).plaintext
    auth = {"Authorization": f"Bearer {key}"}
    tool = f"BT{prefix.upper()}"
    account = f"bad-{uuid.uuid4().hex[:8]}"
    with (
        running_api(env, log_path=data_dir / "api.log") as url,
        httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http,
    ):

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = http.post(path, json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex})
            assert r.status_code in (200, 201), r.text
            return r.json()

        r = http.put(
            f"/v1/tools/{tool}",
            json={"display_name": "t", "cost": 2, "credit_type": "credits"},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        post(
            f"/v1/accounts/{account}/grants",
            {"credit_type": "credits", "amount": 10_000, "category": "paid"},
        )
        charge_id = post("/v1/charges", {"account_id": account, "tool": tool})["id"]
        hold_id = post("/v1/holds", {"account_id": account, "tool": tool, "amount": 50})["id"]
        yield Api(
            http, Keys(prefix=prefix, buckets=4), auth, account, tool, hold_id, charge_id, url, key
        )


# (name, method, path, body builder, field the 422 names, max characters or None)
HttpCase = tuple[str, str, str, Callable[[Api, str], dict[str, Any]], str, int | None]
HTTP_CASES: list[HttpCase] = [
    ("charge.description", "POST", "/v1/charges",
     lambda a, t: {"account_id": a.account, "tool": a.tool, "description": t},
     "body.description", DESC),
    ("charge.metadata.value", "POST", "/v1/charges",
     lambda a, t: {"account_id": a.account, "tool": a.tool, "metadata": {"k": t}},
     "body.metadata", None),
    ("charge.metadata.key", "POST", "/v1/charges",
     lambda a, t: {"account_id": a.account, "tool": a.tool, "metadata": {t: 1}},
     "body.metadata", None),
    ("charge.metadata.nested", "POST", "/v1/charges",
     lambda a, t: {"account_id": a.account, "tool": a.tool, "metadata": {"a": [{"b": t}]}},
     "body.metadata", None),
    ("charge.account_id", "POST", "/v1/charges",
     lambda a, t: {"account_id": t, "tool": a.tool}, "body.account_id", bounds.ACCOUNT_ID_LEN_MAX),
    ("settle.description", "POST", "/v1/holds/{hold}/settle",
     lambda a, t: {"amount": 1, "description": t}, "body.description", DESC),
    ("settle.metadata", "POST", "/v1/holds/{hold}/settle",
     lambda a, t: {"amount": 1, "metadata": {"k": t}}, "body.metadata", None),
    ("refund.reason", "POST", "/v1/refunds",
     lambda a, t: {"charge_id": a.charge_id, "amount": 1, "reason": t}, "body.reason", DESC),
    ("grant.reason", "POST", "/v1/accounts/{acct}/grants",
     lambda a, t: {"credit_type": "credits", "amount": 1, "category": "paid", "reason": t},
     "body.reason", DESC),
    ("grant.reference_id", "POST", "/v1/accounts/{acct}/grants",
     lambda a, t: {"credit_type": "credits", "amount": 1, "category": "paid", "reference_id": t},
     "body.reference_id", REF),
    ("grant.credit_type", "POST", "/v1/accounts/{acct}/grants",
     lambda a, t: {"credit_type": t, "amount": 1, "category": "paid"},
     "body.credit_type", bounds.CREDIT_TYPE_LEN_MAX),
    ("adjust.reason", "POST", "/v1/accounts/{acct}/adjustments",
     lambda a, t: {"credit_type": "credits", "amount": 1, "reason": t}, "body.reason", DESC),
    ("tool.display_name", "PUT", "/v1/tools/{tool}",
     lambda a, t: {"display_name": t, "cost": 2, "credit_type": "credits"},
     "body.display_name", NAME),
    ("tool.description", "PUT", "/v1/tools/{tool}",
     lambda a, t: {"display_name": "t", "description": t, "cost": 2, "credit_type": "credits"},
     "body.description", DESC),
]  # fmt: skip


def _http_params() -> list[Any]:
    return [
        pytest.param(case, text, id=f"{case[0]}-{kind}")
        for case in HTTP_CASES
        for kind, text in bad_texts(case[5]).items()
    ]


def _balance(a: Api) -> tuple[int, int]:
    r = a.http.get(f"/v1/accounts/{a.account}/balance", headers=a.auth)
    (w,) = [b for b in r.json()["balances"] if b["credit_type"] == "credits"]
    return w["balance"], w["held"]


def _tool_row(pg: Engine, name: str) -> tuple[Any, ...]:
    with pg.connect() as conn:
        return tuple(conn.execute(select(T_TOOLS).where(T_TOOLS.c.name == name)).one())


@pytest.mark.parametrize(("case", "text"), _http_params())
def test_http_refuses_text_sql_cannot_store(
    api: Api, rc: redis.Redis, pg: Engine, case: HttpCase, text: str
) -> None:
    _, method, path, body_of, field, _ = case
    path = path.format(hold=api.hold_id, acct=api.account, tool=api.tool)
    idem = uuid.uuid4().hex
    before = (_balance(api), journal_len(rc, api.keys), _tool_row(pg, api.tool))
    # json.dumps escapes a lone surrogate as "\ud800", as a client in any language would.
    r = api.http.request(
        method,
        path,
        content=json.dumps(body_of(api, text)).encode(),
        headers={**api.auth, "Idempotency-Key": idem, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]], r.json()
    assert (_balance(api), journal_len(rc, api.keys), _tool_row(pg, api.tool)) == before
    assert rc.exists(api.keys.http_idempotency(idem)) == 0


@pytest.mark.parametrize("text", ["a\x00b", "%00", WIDE * 129], ids=["nul", "pct-nul", "oversize"])
def test_http_refuses_a_bad_account_id_in_the_path(api: Api, text: str) -> None:
    r = api.http.get(f"/v1/accounts/{quote(text, safe='%')}/balance", headers=api.auth)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_dashboard_account_search_refuses_nul(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=HTTP_TIMEOUT_S) as browser:
        assert login(browser, api.admin_key).status_code == 303
        assert browser.get("/admin/accounts", params={"q": "bad"}).status_code == 200
        r = browser.get("/admin/accounts", params={"q": "a\x00b"})
    assert r.status_code == 422, r.text
    assert "query.q" in [e["field"] for e in r.json()["errors"]]


def test_http_accepts_multibyte_text_of_exactly_the_limit_and_it_reaches_sql(
    api: Api, rc: redis.Redis, pg: Engine
) -> None:
    def send(method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {**api.auth, "Idempotency-Key": uuid.uuid4().hex}
        return api.http.request(method, path, json=body, headers=headers)

    acct = f"wide-{uuid.uuid4().hex[:8]}"
    desc, ref, meta = WIDE * DESC, WIDE * REF, {WIDE * 8: WIDE * 1000}
    grant = {"credit_type": "credits", "amount": 100, "category": "paid"}
    answers = [
        send("POST", f"/v1/accounts/{acct}/grants", {**grant, "reason": desc, "reference_id": ref}),
        send("POST", "/v1/charges", {"account_id": acct, "tool": api.tool, "description": desc}),
        send("POST", "/v1/charges", {"account_id": acct, "tool": api.tool, "metadata": meta}),
        send("POST", f"/v1/accounts/{acct}/adjustments",
             {"credit_type": "credits", "amount": -1, "reason": desc}),
    ]  # fmt: skip
    assert [r.status_code for r in answers] == [201] * 4, [r.text for r in answers]
    charge_id = answers[1].json()["id"]
    r = send("POST", "/v1/refunds", {"charge_id": charge_id, "amount": 1, "reason": desc})
    assert r.status_code == 201, r.text
    r = api.http.put(
        f"/v1/tools/{api.tool}",
        json={
            "display_name": WIDE * NAME,
            "description": desc,
            "cost": 2,
            "credit_type": "credits",
        },
        headers=api.auth,
    )
    assert r.status_code == 200, r.text
    assert _tool_row(pg, api.tool)[1:3] == (WIDE * NAME, desc)
    flush_and_assert_no_dead_letter(rc, pg, api.keys)
    stored = ledger_texts(pg, acct)
    assert {desc, ref} <= stored
    assert any(WIDE * 1000 in json.loads(m).get(WIDE * 8, "") for m in stored if m[0] == "{")


# --- in-process Meter ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inproc(rc: redis.Redis, pg: Engine) -> tuple[Meter, Keys, Tool]:
    keys = Keys(prefix="m" + uuid.uuid4().hex[:10], buckets=4)
    tool = Tool(f"MT{keys.prefix.upper()}", 2, "credits")
    save_tools(pg, [tool])
    meter = Meter(rc, keys=keys, loader=SqlLoader(pg, keys))
    meter.set_tools([tool])
    return meter, keys, tool


ACCT = "inproc-" + uuid.uuid4().hex[:8]
# (name, call with the text, field named, max characters or None)
MeterCase = tuple[str, Callable[[Meter, str, str], object], str, int | None]
METER_CASES: list[MeterCase] = [
    ("charge.description", lambda m, t, tool: m.charge(ACCT, tool, description=t),
     "description", DESC),
    ("charge.metadata", lambda m, t, tool: m.charge(ACCT, tool, metadata={"k": [t]}),
     "metadata.k[0]", None),
    ("charge.metadata.key", lambda m, t, tool: m.charge(ACCT, tool, metadata={t: 1}),
     "metadata", None),
    ("charge.account_id", lambda m, t, tool: m.charge(t, tool), "account_id", None),
    ("charge.idempotency_key", lambda m, t, tool: m.charge(ACCT, tool, idempotency_key=t),
     "idempotency_key", None),
    ("grant.description", lambda m, t, tool: m.grant(ACCT, "credits", 1, description=t),
     "description", DESC),
    ("grant.reference_id", lambda m, t, tool: m.grant(ACCT, "credits", 1, reference_id=t),
     "reference_id", REF),
    ("grant.credit_type", lambda m, t, tool: m.grant(ACCT, t, 1), "credit_type", None),
    ("adjust.reason", lambda m, t, tool: m.adjust(ACCT, "credits", 1, reason=t), "reason", DESC),
]  # fmt: skip


def _meter_params() -> list[Any]:
    return [
        pytest.param(case, text, id=f"{case[0]}-{kind}")
        for case in METER_CASES
        for kind, text in bad_texts(case[3]).items()
    ]


@pytest.mark.parametrize(("case", "text"), _meter_params())
def test_meter_refuses_text_sql_cannot_store(
    inproc: tuple[Meter, Keys, Tool], rc: redis.Redis, case: MeterCase, text: str
) -> None:
    meter, keys, tool = inproc
    _, call, field, _ = case
    meter.grant(ACCT, "credits", 1_000, category="paid", idempotency_key="seed")
    before = (meter.balance(ACCT, ["credits"]).wallet("credits").balance, journal_len(rc, keys))
    with pytest.raises(InvalidArgument) as err:
        call(meter, text, tool.name)
    assert err.value.field.startswith(field.split(".")[0]), err.value
    after = (meter.balance(ACCT, ["credits"]).wallet("credits").balance, journal_len(rc, keys))
    assert after == before


def test_meter_accepts_multibyte_text_of_exactly_the_limit_and_it_reaches_sql(
    inproc: tuple[Meter, Keys, Tool], rc: redis.Redis, pg: Engine
) -> None:
    meter, keys, tool = inproc
    acct = f"wide-{uuid.uuid4().hex[:8]}"
    desc, ref = WIDE * DESC, WIDE * REF
    meter.grant(acct, "credits", 100, category="paid", reference_id=ref, description=desc)
    c = meter.charge(acct, tool.name, description=desc, metadata={"k": WIDE * 1000})
    meter.refund(c.id, 1, reason=desc)
    meter.adjust(acct, "credits", -1, reason=desc)
    h = meter.hold(acct, tool.name, amount=5)
    meter.settle(h.id, 1, description=desc)
    flush_and_assert_no_dead_letter(rc, pg, keys)
    assert {desc, ref} <= ledger_texts(pg, acct)


# --- Lua: the scripts refuse the same bytes on their own -------------------------------------

DESCRIPTION_ARG = 9  # ARGV[10] of lua/charge.lua: the charge's description


@pytest.mark.parametrize(
    "raw",
    [
        b"a\x00b",
        b"\xff",
        b"\xc3",  # a truncated 2-byte sequence
        b"\xc0\xaf",  # an overlong "/"
        b"\xe0\x80\xaf",  # an overlong "/" in 3 bytes
        b"a\x80",  # a continuation byte alone
        b"\xe0\xc3\xa9\xa0\x80",  # valid "\xc3\xa9" between the halves of nothing valid
        b"\xed\xa0\x80",  # U+D800 in CESU-8: a surrogate
        b"\xf4\x90\x80\x80",  # past U+10FFFF
        (WIDE * (DESC + 1)).encode(),
    ],
    ids=[
        "nul",
        "ff",
        "truncated",
        "overlong",
        "overlong-3",
        "continuation",
        "no-join",
        "surrogate",
        "past-max",
        "oversize",
    ],
)
def test_charge_script_refuses_bytes_sql_cannot_store(
    inproc: tuple[Meter, Keys, Tool], rc: redis.Redis, raw: bytes
) -> None:
    meter, keys, tool = inproc
    meter.grant(ACCT, "credits", 1_000, category="paid", idempotency_key="seed")
    op = ops.charge(ops.Env(keys), ACCT, tool.name, description="placeholder")
    ev = next(op)
    assert isinstance(ev, ops.Eval) and ev.args[DESCRIPTION_ARG] == "placeholder"
    args: list[Any] = list(ev.args)
    args[DESCRIPTION_ARG] = raw
    before = journal_len(rc, keys)
    script = scripts.get("charge")
    (reply,) = rc.eval(script.source, len(ev.keys), *ev.keys, *args)
    assert reply == [Code.BAD_ARGUMENT.value, b"description"]
    assert journal_len(rc, keys) == before


def test_charge_script_counts_characters_not_bytes(
    inproc: tuple[Meter, Keys, Tool], rc: redis.Redis
) -> None:
    """1,024 three-byte characters (3,072 bytes) are within DESCRIPTION_LEN_MAX characters."""
    meter, keys, tool = inproc
    meter.grant(ACCT, "credits", 1_000, category="paid", idempotency_key="seed")
    op = ops.charge(ops.Env(keys), ACCT, tool.name, description=WIDE * DESC)
    ev = next(op)
    assert isinstance(ev, ops.Eval)
    (reply,) = rc.eval(scripts.get("charge").source, len(ev.keys), *ev.keys, *ev.args)
    assert int(reply[0]) in (0, 1), reply  # applied
