"""The catalog file: strict parsing (every error names the file and the field) and apply
(SQL first, then every Redis replica; a second apply changes and reports nothing).

Welcome grants reach every account created afterwards, so these tests apply catalogs to a
SQLite file of this module only, never to the SQL other tests share."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select

from meter import Meter, RateLimited, ToolDisabled
from meter.keys import Keys
from sync import pricing
from sync.catalog_file import CatalogError, apply_catalog, load_catalog, parse_catalog
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.models import T_AUDIT, T_SLABS
from sync.pricing import Pack, Plan, PriceTable, Slab
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
        (TOOL + 'rate_limit = "60/min"\n', "tools[IMAGE_GEN].rate_limit", "N/minute"),
        (TOOL + 'rate_limit = "0/minute"\n', "tools[IMAGE_GEN].rate_limit", "N/minute"),
        (TOOL + "rate_limit = 60\n", "tools[IMAGE_GEN].rate_limit", "a string"),
        (TOOL + 'rate_limit = "2000000/hour"\n', "tools[IMAGE_GEN].rate_limit", "at most"),
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


def test_a_rate_limit_reaches_sql_and_every_replica_and_limits_charges(
    own_engine: Engine, meter: Meter, client: redis.Redis, keys: Keys
) -> None:
    tool, ct = _names()
    limited = parse_catalog(_catalog(tool, ct, cost=0) + 'rate_limit = "2/hour"\n')
    assert apply_catalog(own_engine, meter, limited) == [
        f"tool {tool}: added, 0 {ct} per unit, at most 2/hour per account, active"
    ]
    saved = get_tool(own_engine, tool)
    assert saved is not None and saved.rate_limit == "2/hour"
    assert _replicas(client, keys, tool) == {f"0|{ct}|1|2|3600000".encode()}
    acct = f"acct-{uuid.uuid4().hex[:8]}"
    meter.charge(acct, tool)
    meter.charge(acct, tool)
    with pytest.raises(RateLimited):
        meter.charge(acct, tool)
    client.delete(*(keys.catalog(b) for b in keys.all_buckets()))  # restored from SQL
    with pytest.raises(RateLimited):
        meter.charge(acct, tool)
    lifted = parse_catalog(_catalog(tool, ct, cost=0))
    assert apply_catalog(own_engine, meter, lifted) == [f"tool {tool}: rate limit 2/hour -> none"]
    meter.charge(acct, tool)


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


# --- packs, prices, plans: parsing ----------------------------------------------------------

PACK = """
[[packs]]
id = "p-small"
credits = 50
credit_type = "credits"
amount = 500
currency = "usd"
"""
PRICES = """
[prices.credits]
currency = "usd"
mode = "graduated"
minimum = 10
slabs = [
    { from = 1, to = 999, unit_amount = 10 },
    { from = 1000, unit_amount = 8 },
]
"""
PLAN = """
[[plans]]
id = "pro"
stripe_price_id = "price_pro"
allocations = { credits = 1000 }
rollover_cap = 0
discount_percent = 20
"""


def test_the_example_catalog_has_packs_prices_and_a_plan() -> None:
    c = load_catalog(EXAMPLE)
    assert c.packs == (
        Pack("credits-small", "credits", 50, 500, "usd", "50 credits"),
        Pack("credits-large", "credits", 100, 900, "usd", "100 credits"),
    )
    assert c.prices == (
        PriceTable(
            "credits",
            "usd",
            "graduated",
            10,
            (Slab(1, 999, 10), Slab(1000, 9999, 8), Slab(10000, None, 6)),
        ),
        PriceTable("video_seconds", "usd", "volume", 60, (Slab(1, 599, 5), Slab(600, None, 4))),
    )
    assert c.plans == (
        Plan(
            "pro",
            "price_pro_monthly",
            {"credits": 1000, "video_seconds": 120},
            rollover_cap=500,
            discount_percent=20,
            display_name="Pro",
        ),
    )


def test_sections_absent_from_the_file_are_none_and_defaults_apply() -> None:
    assert (parse_catalog(TOOL).packs, parse_catalog("").prices, parse_catalog("").plans) == (
        None,
        None,
        None,
    )
    assert parse_catalog("packs = []\nplans = []\n[prices]\n").packs == ()
    c = parse_catalog(PACK + PLAN)
    (pack,) = c.packs or ()
    assert (pack.active, pack.display_name) == (True, "")
    (plan,) = c.plans or ()
    assert (plan.active, plan.expire_at_period_end, plan.display_name) == (True, True, "")
    volume = PRICES.replace('"graduated"', '"volume"').replace("from = 1,", "from = 5,")
    (table,) = parse_catalog(volume).prices or ()
    assert table.slabs[0].from_credits == 5  # volume: the first slab may start at the minimum


def _slabs(*slabs: str, mode: str = "graduated", minimum: int = 10) -> str:
    return (
        f'[prices.credits]\ncurrency = "usd"\nmode = "{mode}"\nminimum = {minimum}\n'
        f"slabs = [{', '.join(slabs)}]\n"
    )


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        # packs
        (PACK.replace('"p-small"', '"P_small"'), "packs[0].id", "[a-z0-9-]"),
        (PACK.replace("credits = 50", "credits = 0"), "packs[p-small].credits", "integer"),
        (PACK.replace("credits = 50", "credits = 50.0"), "packs[p-small].credits", "integer"),
        (PACK.replace("amount = 500", "amount = 0"), "packs[p-small].amount", "integer"),
        (PACK.replace("amount = 500", "amount = true"), "packs[p-small].amount", "integer"),
        (PACK.replace("amount = 500", 'amount = "500"'), "packs[p-small].amount", "integer"),
        (PACK.replace('"usd"', '"USD"'), "packs[p-small].currency", "ISO 4217"),
        (PACK.replace('"usd"', '"usdd"'), "packs[p-small].currency", "ISO 4217"),
        (PACK.replace('currency = "usd"', ""), "packs[p-small].currency", "required"),
        (PACK + "price = 1\n", "packs[p-small].price", "unknown key"),
        (PACK + PACK, "packs[1]", "p-small is listed twice"),
        ('[packs]\nid = "x"\n', "packs", "[[packs]]"),
        # prices
        ("prices = 1\n", "prices", "[prices.<credit_type>]"),
        (PRICES.replace("[prices.credits]", "[prices.Credits]"), "prices.Credits", "a-z0-9_"),
        (PRICES.replace('"graduated"', '"tiered"'), "prices.credits.mode", "volume or graduated"),
        (PRICES.replace("minimum = 10", "minimum = 0"), "prices.credits.minimum", "integer"),
        (PRICES.replace("minimum = 10\n", ""), "prices.credits.minimum", "required"),
        (PRICES + "colour = 1\n", "prices.credits.colour", "unknown key"),
        (_slabs(), "prices.credits.slabs", "array of 1-32"),
        (
            _slabs(*(f"{{ from = {i}, to = {i}, unit_amount = 1 }}" for i in range(1, 34))),
            "prices.credits.slabs",
            "array of 1-32",
        ),
        (_slabs("{ from = 2, unit_amount = 1 }"), "prices.credits.slabs[0].from", "must be 1"),
        (
            _slabs("{ from = 11, unit_amount = 1 }", mode="volume"),
            "prices.credits.slabs[0].from",
            "at most the minimum (10)",
        ),
        (
            _slabs("{ from = 1, to = 9, unit_amount = 1 }", "{ from = 11, unit_amount = 1 }"),
            "prices.credits.slabs[1].from",
            "must be 10: the previous slab ends at 9",
        ),
        (
            _slabs("{ from = 1, unit_amount = 1 }", "{ from = 2, unit_amount = 1 }"),
            "prices.credits.slabs[0].to",
            "only the last slab may omit it",
        ),
        (
            _slabs("{ from = 1, to = 0, unit_amount = 1 }"),
            "prices.credits.slabs[0].to",
            "integer",
        ),
        (
            _slabs("{ from = 5, to = 4, unit_amount = 1 }", mode="volume"),
            "prices.credits.slabs[0].to",
            "at least from (5)",
        ),
        (
            _slabs("{ from = 1, unit_amount = -1 }"),
            "prices.credits.slabs[0].unit_amount",
            "integer",
        ),
        (
            _slabs("{ from = 1, unit_amount = 1.5 }"),
            "prices.credits.slabs[0].unit_amount",
            "integer",
        ),
        (
            _slabs("{ from = 1, unit_amount = 1, upto = 3 }"),
            "prices.credits.slabs[0].upto",
            "unknown key",
        ),
        (
            _slabs("{ from = 1, to = 9, unit_amount = 1 }"),
            "prices.credits.minimum",
            "above the last slab's to (9)",
        ),
        # plans
        (PLAN.replace('"pro"', '"Pro!"'), "plans[0].id", "[a-z0-9-]"),
        (PLAN.replace('"price_pro"', '"price pro"'), "plans[pro].stripe_price_id", "Stripe"),
        (PLAN.replace("{ credits = 1000 }", "{}"), "plans[pro].allocations", "1-32"),
        (PLAN.replace("{ credits = 1000 }", "1000"), "plans[pro].allocations", "1-32"),
        (PLAN.replace("credits = 1000", "credits = 0"), "plans[pro].allocations", "credits:"),
        (PLAN.replace("credits = 1000", "credits = 1e3"), "plans[pro].allocations", "integer"),
        (PLAN.replace("credits = 1000", "Credits = 1"), "plans[pro].allocations", "Credits"),
        (
            PLAN.replace("rollover_cap = 0", "rollover_cap = -1"),
            "plans[pro].rollover_cap",
            "integer",
        ),
        (PLAN.replace("rollover_cap = 0\n", ""), "plans[pro].rollover_cap", "required"),
        (PLAN.replace("= 20", "= 101"), "plans[pro].discount_percent", "[0, 100]"),
        (PLAN.replace("= 20", "= 20.5"), "plans[pro].discount_percent", "[0, 100]"),
        (PLAN.replace("= 20", "= false"), "plans[pro].discount_percent", "[0, 100]"),
        (PLAN + "expire_at_period_end = 1\n", "plans[pro].expire_at_period_end", "true or false"),
        (PLAN + "trial_days = 1\n", "plans[pro].trial_days", "unknown key"),
        (PLAN + PLAN, "plans[1]", "pro is listed twice"),
        (
            PLAN + PLAN.replace('"pro"', '"max"'),
            "plans[max].stripe_price_id",
            "price_pro is plan pro's already",
        ),
    ],
)
def test_an_invalid_pack_price_or_plan_names_the_file_and_the_field(
    text: str, where: str, says: str
) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "my.toml")
    message = str(info.value)
    assert message.startswith(f"my.toml: {where}"), message
    assert says in message, message
    assert "\n" not in message.strip()


WELCOME = '[welcome]\ncredit_type = "c"\namount = 1\n'


@pytest.mark.parametrize(
    ("text", "where", "typo"),
    [
        (TOOL.replace("cost", "cots"), "tools[IMAGE_GEN].cots", "cots"),
        (TOOL.replace("name", "nmae"), "tools[0].nmae", "nmae"),
        (WELCOME.replace("amount", "amout"), "welcome[c].amout", "amout"),
        (PACK.replace("credits = 50", "credts = 50"), "packs[p-small].credts", "credts"),
        (PRICES.replace("minimum", "minimun"), "prices.credits.minimun", "minimun"),
        (PRICES.replace("from = 1000", "form = 1000"), "prices.credits.slabs[1].form", "form"),
        (PLAN.replace("rollover_cap", "rolover_cap"), "plans[pro].rolover_cap", "rolover_cap"),
    ],
)
def test_a_misspelt_required_key_is_named_unknown_not_reported_missing(
    text: str, where: str, typo: str
) -> None:
    """A typo leaves the key it meant missing: the typo is the error the user needs."""
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "my.toml")
    message = str(info.value)
    assert message.startswith(f"my.toml: {where}: unknown key `{typo}` (known: "), message
    assert "required" not in message


# --- packs, prices, plans: applying ---------------------------------------------------------


@pytest.fixture
def fresh_engine(tmp_path: Path) -> Engine:
    """SQL of this test alone: the sections are declarative, so an apply switches off every
    pack and plan the file omits, another test's included."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    return engine_for(url)


@pytest.fixture
def fresh_meter(client: redis.Redis, fresh_engine: Engine, keys: Keys) -> Meter:
    return Meter(client, keys=keys, loader=SqlLoader(fresh_engine, keys))


def test_applying_packs_prices_and_plans_is_idempotent(
    fresh_engine: Engine, fresh_meter: Meter
) -> None:
    catalog = parse_catalog(PACK + PRICES + PLAN, "my.toml")
    assert apply_catalog(fresh_engine, fresh_meter, catalog) == [
        "pack p-small: added, 50 credits for 500 usd, active",
        "prices credits: added, graduated, minimum 10, 1-999 at 10, 1000+ at 8 "
        "(usd minor units per credit)",
        "plan pro: added, price_pro, 1000 credits per period, rollover cap 0, "
        "20% off purchases, expires at period end, active",
    ]
    assert apply_catalog(fresh_engine, fresh_meter, catalog) == []
    assert pricing.load_packs(fresh_engine) == [Pack("p-small", "credits", 50, 500, "usd")]
    assert pricing.quote(fresh_engine, "credits", 1000, plan_id="pro").amount == 9998 - 1999
    (audit_row,) = _audit(fresh_engine)
    assert audit_row["target"] == "my.toml" and "pack p-small" in audit_row["detail"]


def test_the_example_applies_once(fresh_engine: Engine, fresh_meter: Meter) -> None:
    catalog = load_catalog(EXAMPLE)
    lines = apply_catalog(fresh_engine, fresh_meter, catalog)
    assert len(lines) == 3 + 1 + 2 + 2 + 1  # tools, welcome, packs, prices, plan
    assert apply_catalog(fresh_engine, fresh_meter, catalog) == []
    packs = pricing.load_packs(fresh_engine)
    assert [(p.id, p.credits, p.amount) for p in packs] == [
        ("credits-small", 50, 500),
        ("credits-large", 100, 900),
    ]


def test_changes_are_reported_field_by_field(fresh_engine: Engine, fresh_meter: Meter) -> None:
    apply_catalog(fresh_engine, fresh_meter, parse_catalog(PACK + PLAN))
    changed = (
        PACK.replace("amount = 500", "amount = 450") + 'display_name = "Small"\n'
    ) + PLAN.replace("= 20", "= 25").replace("{ credits = 1000 }", "{ credits = 900, video = 5 }")
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(changed)) == [
        "pack p-small: amount 500 -> 450, display_name '' -> 'Small'",
        "plan pro: allocations 1000 credits -> 900 credits + 5 video, discount_percent 20 -> 25",
    ]
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(changed)) == []


def test_a_pack_or_plan_the_file_omits_becomes_inactive_never_deleted(
    fresh_engine: Engine, fresh_meter: Meter
) -> None:
    large = PACK.replace("p-small", "p-large").replace("credits = 50", "credits = 100")
    max_plan = PLAN.replace('"pro"', '"max"').replace("price_pro", "price_max")
    apply_catalog(fresh_engine, fresh_meter, parse_catalog(PACK + large + PLAN + max_plan))
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(large + max_plan)) == [
        "pack p-small: not in the file, active -> inactive",
        "plan pro: not in the file, active -> inactive",
    ]
    assert [p.id for p in pricing.load_packs(fresh_engine)] == ["p-large"]
    every = pricing.load_packs(fresh_engine, active_only=False)
    assert {p.id: p.active for p in every} == {"p-small": False, "p-large": True}
    assert pricing.get_plan(fresh_engine, "pro") == Plan(
        "pro", "price_pro", {"credits": 1000}, 0, 20, active=False
    )
    with pytest.raises(pricing.UnknownPack):
        pricing.pack_quote(fresh_engine, "p-small")
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(large + max_plan)) == []
    # A file without the sections leaves them alone; empty sections switch everything off.
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(TOOL)) == [
        "tool IMAGE_GEN: added, 10 credits per unit, active"
    ]
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog("packs = []\nplans = []")) == [
        "pack p-large: not in the file, active -> inactive",
        "plan max: not in the file, active -> inactive",
    ]
    # Back in the file, it is active again.
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(PACK)) == [
        "pack p-small: inactive -> active"
    ]


def test_a_retired_plans_price_id_cannot_be_taken(fresh_engine: Engine, fresh_meter: Meter) -> None:
    apply_catalog(fresh_engine, fresh_meter, parse_catalog(PLAN))
    taker = parse_catalog(PLAN.replace('"pro"', '"max"'), "my.toml")
    with pytest.raises(CatalogError, match=r"my.toml: plans\[max\].stripe_price_id: .* plan pro's"):
        apply_catalog(fresh_engine, fresh_meter, taker)
    assert pricing.get_plan(fresh_engine, "max") is None  # checked before any write
    # Two plans of the file may swap their price ids.
    both = PLAN + PLAN.replace('"pro"', '"max"').replace("price_pro", "price_max")
    apply_catalog(fresh_engine, fresh_meter, parse_catalog(both))
    swapped = both.replace("price_pro", "price_tmp").replace("price_max", "price_pro")
    swapped = swapped.replace("price_tmp", "price_max")
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(swapped)) == [
        "plan pro: stripe_price_id price_pro -> price_max",
        "plan max: stripe_price_id price_max -> price_pro",
    ]


def test_the_slabs_of_a_named_credit_type_are_replaced(
    fresh_engine: Engine, fresh_meter: Meter
) -> None:
    video = PRICES.replace("prices.credits", "prices.video").replace('"graduated"', '"volume"')
    apply_catalog(fresh_engine, fresh_meter, parse_catalog(PRICES + video))
    three = PRICES.replace(
        "{ from = 1000, unit_amount = 8 },",
        "{ from = 1000, to = 4999, unit_amount = 8 }, { from = 5000, unit_amount = 7 },",
    )
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(three + video)) == [
        "prices credits: now graduated, minimum 10, 1-999 at 10, 1000-4999 at 8, 5000+ at 7 "
        "(usd minor units per credit)"
    ]
    table = pricing.load_prices(fresh_engine)["credits"]
    assert table.slabs == (Slab(1, 999, 10), Slab(1000, 4999, 8), Slab(5000, None, 7))
    assert _slab_rows(fresh_engine, "credits") == 3
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(three + video)) == []
    # A credit type the [prices] section omits is no longer sold by the unit.
    assert apply_catalog(fresh_engine, fresh_meter, parse_catalog(three)) == [
        "prices video: removed, not in the file"
    ]
    assert set(pricing.load_prices(fresh_engine)) == {"credits"}
    with pytest.raises(pricing.UnknownCreditType):
        pricing.quote(fresh_engine, "video", 100)


def _audit(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(T_AUDIT).where(T_AUDIT.c.action == "catalog.apply"))
        return [dict(r) for r in rows.mappings()]


def _slab_rows(engine: Engine, credit_type: str) -> int:
    with engine.connect() as conn:
        query = (
            select(func.count()).select_from(T_SLABS).where(T_SLABS.c.credit_type == credit_type)
        )
        return int(conn.execute(query).scalar_one())
