"""The catalog file: strict parsing (every error names the file and the field) and apply
(SQL first, then every Redis replica; a second apply changes and reports nothing).

Welcome grants reach every account created afterwards, so these tests apply catalogs to a
SQLite file of this module only, never to the SQL other tests share."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from meter import Meter, ToolDisabled
from meter.keys import Keys
from sync.catalog_file import CatalogError, apply_catalog, load_catalog, parse_catalog
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.tools import get_tool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.toml"
TOOL = """
[[tools]]
name = "IMAGE_GEN"
cost = 10
credit_type = "credits"
"""


@pytest.fixture(scope="module")
def own_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'catalog.db'}"
    upgrade(url)
    return engine_for(url)


@pytest.fixture
def meter(client: redis.Redis, own_engine: Engine, keys: Keys) -> Meter:
    return Meter(client, keys=keys, loader=SqlLoader(own_engine, keys))


def _names() -> tuple[str, str]:
    """A tool name and a credit type no other test uses."""
    tag = uuid.uuid4().hex[:8]
    return f"T_{tag.upper()}", f"ct_{tag}"


def _catalog(tool: str, ct: str, cost: int = 4, welcome: int | None = None) -> str:
    text = f'[[tools]]\nname = "{tool}"\ncost = {cost}\ncredit_type = "{ct}"\n'
    if welcome is not None:
        text += f'[welcome]\ncredit_type = "{ct}"\namount = {welcome}\n'
    return text


def _replicas(client: redis.Redis, keys: Keys, tool: str) -> set[bytes | None]:
    return {client.hget(keys.catalog(b), tool) for b in keys.all_buckets()}


# --- parsing --------------------------------------------------------------------------------


def test_the_example_catalog_parses() -> None:
    c = load_catalog(EXAMPLE)
    assert {t.name: (t.cost, t.credit_type) for t in c.tools} == {
        "IMAGE_GEN": (10, "credits"),
        "VIDEO_GEN": (5, "video_seconds"),
        "LLM_CHAT": (1, "credits"),
    }
    assert [(w.credit_type, w.amount, w.category) for w in c.welcome] == [
        ("credits", 100, "promotional")
    ]


def test_defaults_and_both_welcome_shapes() -> None:
    one = parse_catalog(TOOL + '[welcome]\ncredit_type = "credits"\namount = 5\n')
    (tool,) = one.tools
    assert (tool.active, tool.display_name, tool.description) == (True, "", "")
    (w,) = one.welcome
    assert (w.category, w.priority, w.expires_in_s) == ("promotional", 50, None)
    many = parse_catalog(
        '[[welcome]]\ncredit_type = "a"\namount = 1\nexpires_in_days = 2\n'
        '[[welcome]]\ncredit_type = "b"\namount = 2\ncategory = "paid"\npriority = 0\n'
    )
    assert [(w.credit_type, w.expires_in_s, w.category) for w in many.welcome] == [
        ("a", 2 * 86_400, "promotional"),
        ("b", None, "paid"),
    ]
    assert parse_catalog("").tools == ()


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (TOOL.replace("10", "10.0"), "tools[IMAGE_GEN].cost", "integer"),
        (TOOL.replace("10", '"10"'), "tools[IMAGE_GEN].cost", "integer"),
        (TOOL.replace("10", "true"), "tools[IMAGE_GEN].cost", "integer"),
        (TOOL.replace("10", "-1"), "tools[IMAGE_GEN].cost", "integer"),
        (TOOL.replace("10", "9007199254740992"), "tools[IMAGE_GEN].cost", "integer"),
        (TOOL + "colour = 1\n", "tools[IMAGE_GEN].colour", "unknown key"),
        (TOOL + 'active = "yes"\n', "tools[IMAGE_GEN].active", "true or false"),
        (TOOL.replace("IMAGE_GEN", "image_gen"), "tools[0].name", "A-Z0-9_"),
        (TOOL.replace('credit_type = "credits"', ""), "tools[IMAGE_GEN].credit_type", "required"),
        (TOOL.replace('"credits"', '"Credits"'), "tools[IMAGE_GEN].credit_type", "a-z0-9_"),
        (TOOL + TOOL, "tools[1]", "IMAGE_GEN is listed twice"),
        ('[tools]\nname = "X"\n', "tools", "[[tools]]"),
        ("[coupons]\nx = 1\n", "coupons", "unknown section"),
        (
            '[welcome]\ncredit_type = "c"\namount = 1\ncategory = "gift"\n',
            "welcome[c].category",
            "paid or promotional",
        ),
        (
            '[welcome]\ncredit_type = "c"\namount = 1\npriority = 101\n',
            "welcome[c].priority",
            "[0, 100]",
        ),
        (
            '[welcome]\ncredit_type = "c"\namount = 1\nexpires_in_days = 0\n',
            "welcome[c].expires_in_days",
            "integer",
        ),
        ('[welcome]\ncredit_type = "c"\n', "welcome[c].amount", "required"),
        ("[[tools]]\nname = ", "not valid TOML", ""),
    ],
)
def test_an_invalid_catalog_names_the_file_and_the_field(text: str, where: str, says: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "my.toml")
    message = str(info.value)
    assert message.startswith(f"my.toml: {where}"), message
    assert says in message
    assert "\n" not in message.strip()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"nope\.toml: catalog file not found"):
        load_catalog(tmp_path / "nope.toml")


# --- applying -------------------------------------------------------------------------------


def test_apply_writes_sql_then_every_replica_and_is_idempotent(
    own_engine: Engine, meter: Meter, client: redis.Redis, keys: Keys
) -> None:
    tool, ct = _names()
    catalog = parse_catalog(_catalog(tool, ct, cost=4))
    assert apply_catalog(own_engine, meter, catalog) == [
        f"tool {tool}: added, 4 {ct} per unit, active"
    ]
    saved = get_tool(own_engine, tool)
    assert saved is not None and saved.cost == 4
    assert _replicas(client, keys, tool) == {f"4|{ct}|1".encode()}
    assert apply_catalog(own_engine, meter, catalog) == []

    changed = parse_catalog(_catalog(tool, ct, cost=6) + "active = false\n")
    assert apply_catalog(own_engine, meter, changed) == [
        f"tool {tool}: cost 4 -> 6, active -> inactive"
    ]
    assert _replicas(client, keys, tool) == {f"6|{ct}|0".encode()}
    with pytest.raises(ToolDisabled):
        meter.charge(f"acct-{uuid.uuid4().hex[:8]}", tool, idempotency_key=uuid.uuid4().hex)
    assert apply_catalog(own_engine, meter, changed) == []


def test_apply_restores_missing_replicas_with_every_sql_tool(
    own_engine: Engine, meter: Meter, client: redis.Redis, keys: Keys
) -> None:
    first, ct = _names()
    second, _ = _names()
    apply_catalog(own_engine, meter, parse_catalog(_catalog(first, ct)))
    client.delete(*(keys.catalog(b) for b in keys.all_buckets()))  # Redis lost the replicas
    assert apply_catalog(own_engine, meter, parse_catalog(_catalog(second, ct))) == [
        f"tool {second}: added, 4 {ct} per unit, active"
    ]
    assert _replicas(client, keys, first) == {f"4|{ct}|1".encode()}
    assert _replicas(client, keys, second) == {f"4|{ct}|1".encode()}


def test_the_welcome_grant_reaches_new_accounts_and_amount_0_removes_it(
    own_engine: Engine, meter: Meter
) -> None:
    tool, ct = _names()
    with_welcome = parse_catalog(_catalog(tool, ct, cost=4, welcome=30))
    assert apply_catalog(own_engine, meter, with_welcome) == [
        f"tool {tool}: added, 4 {ct} per unit, active",
        f"welcome grant {ct}: added 30 promotional, priority 50, never expires",
    ]
    assert apply_catalog(own_engine, meter, with_welcome) == []
    charged = meter.charge(f"acct-{uuid.uuid4().hex[:8]}", tool, idempotency_key=uuid.uuid4().hex)
    assert charged.balance == 26

    removed = parse_catalog(_catalog(tool, ct, cost=4, welcome=0))
    assert apply_catalog(own_engine, meter, removed) == [f"welcome grant {ct}: removed"]
    assert apply_catalog(own_engine, meter, removed) == []
    newcomer = meter.balance(f"acct-{uuid.uuid4().hex[:8]}").wallet(ct)
    assert newcomer is None or newcomer.balance == 0
