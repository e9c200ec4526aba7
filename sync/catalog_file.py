"""The catalog file (`examples/catalog.toml`, `creditmeter up --catalog FILE`): parsed
strictly, then applied to SQL first and to every bucket's Redis replica after.

Each top-level section has one parser in SECTIONS and one field in Catalog; a new section
is a parser, a field and an apply step. A section or key the parser does not know is an
error naming the file and the field, never silently skipped.

Applying tools and welcome grants merges: what the file names is set, what it omits is left
as it is. A tool is switched off with `active = false` (tools are never deleted: ledger
entries name them); a welcome grant is removed with `amount = 0`.

Applying packs, prices and plans is declarative per section: when the file has the section,
SQL ends up holding what it says. A pack or plan SQL has and the file omits becomes inactive
(never deleted: purchases and subscriptions name them); the slabs of each credit type of
[prices] replace that credit type's rows, and a credit type the file omits loses its slabs
(it is no longer sold by the unit). A file without the section leaves that part of SQL alone.

A second apply of the same file changes nothing and reports nothing. Every change is checked
before the first write; SQL is then written in one transaction per section, so a failure
part-way leaves SQL partly applied, and applying the file again completes it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Engine, select

from meter import Meter, bounds, rate_limits, validate
from meter.errors import InvalidArgument
from meter.models import Tool
from sync import audit, pricing
from sync.catalog import save_tools, set_welcome_grant
from sync.models import T_WELCOME
from sync.pricing import Pack, Plan, PriceTable, Slab
from sync.tools import list_tools

DISPLAY_NAME_LEN_MAX = 255  # the tools.display_name column is VARCHAR(255)
EXPIRES_IN_DAYS_MAX = 3_650  # ten years; more is likely seconds or ms typed as days
SECONDS_PER_DAY = 86_400
STRIPE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")  # price_1Nx...; the column is 255 wide
ALLOCATIONS_MAX = 32  # credit types one plan allocates; each is a grant per period

T = TypeVar("T")
D = TypeVar("D")


class CatalogError(ValueError):
    """The catalog file is not valid; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class WelcomeGrant:
    """What every new account receives in one credit type on first touch."""

    credit_type: str
    amount: int  # 0 removes the welcome grant of this credit type
    category: str = "promotional"
    priority: int = bounds.PRIORITY_DEFAULT
    expires_in_s: int | None = None  # None: never expires; the file says expires_in_days


@dataclass(frozen=True, slots=True)
class Catalog:
    source: str  # the file it came from, for messages
    tools: tuple[Tool, ...] = ()
    welcome: tuple[WelcomeGrant, ...] = ()
    # None: the file has no such section, and applying leaves SQL's as they are.
    packs: tuple[Pack, ...] | None = None
    prices: tuple[PriceTable, ...] | None = None
    plans: tuple[Plan, ...] | None = None


# --- parsing --------------------------------------------------------------------------------


# The keys each kind of table takes. A key the file has and these lack is reported as
# unknown before any missing key, so a typo (`cots`) is named instead of `cost is required`.
TOOL_KEYS = ("name", "display_name", "description", "cost", "credit_type", "active", "rate_limit")
WELCOME_KEYS = ("credit_type", "amount", "category", "priority", "expires_in_days")
PACK_KEYS = ("id", "display_name", "credits", "credit_type", "amount", "currency", "active")
PRICE_KEYS = ("currency", "mode", "minimum", "slabs")
SLAB_KEYS = ("from", "to", "unit_amount")
PLAN_KEYS = (
    "id",
    "display_name",
    "stripe_price_id",
    "allocations",
    "rollover_cap",
    "discount_percent",
    "expire_at_period_end",
    "active",
)


class _Fields:
    """One TOML table being read: each of its known keys taken once; a key it does not know
    is an error, reported before a missing one (which a misspelt key usually is)."""

    def __init__(self, source: str, where: str, table: object, known: tuple[str, ...]) -> None:
        self.source = source
        self.where = where
        self.known = known
        if not isinstance(table, dict):
            self.fail("", "must be a table")
        self.table: dict[str, Any] = dict(table)

    def fail(self, key: str, message: str) -> NoReturn:
        field = f"{self.where}.{key}" if key else self.where
        raise CatalogError(f"{self.source}: {field}: {message}")

    def take(self, key: str, check: Callable[[object], T]) -> T:
        """The checked value of a required key."""
        if key not in self.table:
            self.fail_unknown()
            self.fail(key, "is required")
        return self._check(key, check)

    def take_or(self, key: str, check: Callable[[object], T], default: D) -> T | D:
        """The checked value of an optional key, or `default` when it is absent."""
        return self._check(key, check) if key in self.table else default

    def _check(self, key: str, check: Callable[[object], T]) -> T:
        if key not in self.known:
            raise AssertionError(f"{self.where}: {key} is read but not in its known keys")
        try:
            return check(self.table.pop(key))
        except InvalidArgument as exc:
            self.fail(key, str(exc).removeprefix(f"{exc.field}: "))

    def named(self, section: str, name: str) -> str:
        """Messages name the entry (`tools[IMAGE_GEN]`) once its name is known."""
        self.where = f"{section}[{name}]"
        return name

    def fail_unknown(self) -> None:
        """Fail on the first key of the table that is not a known key, if there is one."""
        for key in self.table:
            if key not in self.known:
                known = ", ".join(self.known)
                self.fail(key, f"unknown key `{key}` (known: {known})")

    def done(self) -> None:
        self.fail_unknown()


def _boolean(value: object) -> bool:
    if type(value) is not bool:
        raise InvalidArgument("value", "must be true or false")
    return value


def _rate_limit(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument("rate_limit", 'must be a string such as "60/minute"')
    return rate_limits.parse(value).text


def _display_name(value: object) -> str:
    return validate.text("display_name", value, DISPLAY_NAME_LEN_MAX)


def _description(value: object) -> str:
    return validate.text("description", value, bounds.DESCRIPTION_LEN_MAX)


def _expires_in_s(days: object) -> int:
    return validate.integer("expires_in_days", days, 1, EXPIRES_IN_DAYS_MAX) * SECONDS_PER_DAY


def _tables(
    source: str, section: str, value: object, single_ok: bool, known: tuple[str, ...]
) -> list[_Fields]:
    """`[[section]]` (an array of tables), or `[section]` (one table) when single_ok."""
    if isinstance(value, dict) and single_ok:
        return [_Fields(source, section, value, known)]
    if not isinstance(value, list):
        shape = f"[[{section}]] or [{section}]" if single_ok else f"[[{section}]]"
        raise CatalogError(f"{source}: {section}: must be written as {shape}")
    return [_Fields(source, f"{section}[{i}]", t, known) for i, t in enumerate(value)]


def _unique(source: str, section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise CatalogError(f"{source}: {section}[{i}]: {name} is listed twice")
        seen.add(name)


def _parse_tools(source: str, value: object) -> dict[str, Any]:
    tools = []
    for f in _tables(source, "tools", value, single_ok=False, known=TOOL_KEYS):
        tools.append(
            Tool(
                name=f.named("tools", f.take("name", validate.tool)),
                display_name=f.take_or("display_name", _display_name, ""),
                description=f.take_or("description", _description, ""),
                cost=f.take("cost", lambda v: validate.credits("cost", v)),
                credit_type=f.take("credit_type", validate.credit_type),
                active=f.take_or("active", _boolean, True),
                rate_limit=f.take_or("rate_limit", _rate_limit, ""),
            )
        )
        f.done()
    _unique(source, "tools", [t.name for t in tools])
    return {"tools": tuple(tools)}


def _parse_welcome(source: str, value: object) -> dict[str, Any]:
    grants = []
    for f in _tables(source, "welcome", value, single_ok=True, known=WELCOME_KEYS):
        grants.append(
            WelcomeGrant(
                credit_type=f.named("welcome", f.take("credit_type", validate.credit_type)),
                amount=f.take("amount", lambda v: validate.credits("amount", v)),
                category=f.take_or("category", validate.category, "promotional"),
                priority=f.take_or("priority", validate.priority, bounds.PRIORITY_DEFAULT),
                expires_in_s=f.take_or("expires_in_days", _expires_in_s, None),
            )
        )
        f.done()
    _unique(source, "welcome", [g.credit_type for g in grants])
    return {"welcome": tuple(grants)}


def _catalog_id(value: object) -> str:
    if not isinstance(value, str) or not pricing.CATALOG_ID_RE.fullmatch(value):
        raise InvalidArgument("id", "must be 1-64 of [a-z0-9-]")
    return value


def _currency(value: object) -> str:
    if not isinstance(value, str) or not pricing.CURRENCY_RE.fullmatch(value):
        raise InvalidArgument("currency", "must be an ISO 4217 code in lower case, e.g. usd")
    return value


def _minor_units(field: str, low: int) -> Callable[[object], int]:
    return lambda v: validate.integer(field, v, low, pricing.AMOUNT_MINOR_MAX)


def _positive_credits(field: str) -> Callable[[object], int]:
    return lambda v: validate.credits(field, v, low=1)


def _percent(value: object) -> int:
    return validate.integer("discount_percent", value, 0, pricing.PERCENT_MAX)


def _mode(value: object) -> pricing.Mode:
    if value not in pricing.MODES:
        raise InvalidArgument("mode", "must be volume or graduated")
    return "volume" if value == "volume" else "graduated"


def _stripe_price_id(value: object) -> str:
    if not isinstance(value, str) or not STRIPE_ID_RE.fullmatch(value):
        raise InvalidArgument("stripe_price_id", "must be a Stripe price id, e.g. price_1Nx...")
    return value


def _allocations(value: object) -> dict[str, int]:
    """{credit_type = credits, ...}: at least one, each credit type at least 1 credit."""
    if not isinstance(value, dict) or not 1 <= len(value) <= ALLOCATIONS_MAX:
        raise InvalidArgument(
            "allocations", f"must be a table of 1-{ALLOCATIONS_MAX} credit_type = credits"
        )
    out = {}
    for ct, credits in value.items():
        if not validate.CREDIT_TYPE_RE.fullmatch(ct):
            raise InvalidArgument("allocations", f"{ct}: a credit type is 1-32 of [a-z0-9_]")
        try:
            out[ct] = validate.credits(ct, credits, low=1)
        except InvalidArgument as exc:
            raise InvalidArgument("allocations", str(exc)) from None
    return dict(sorted(out.items()))


def _slab_list(value: object) -> list[object]:
    if not isinstance(value, list) or not 1 <= len(value) <= pricing.SLABS_MAX:
        raise InvalidArgument(
            "slabs", f"must be an array of 1-{pricing.SLABS_MAX} tables {{from, to, unit_amount}}"
        )
    return value


def _parse_packs(source: str, value: object) -> dict[str, Any]:
    packs = []
    for f in _tables(source, "packs", value, single_ok=False, known=PACK_KEYS):
        packs.append(
            Pack(
                id=f.named("packs", f.take("id", _catalog_id)),
                display_name=f.take_or("display_name", _display_name, ""),
                credits=f.take("credits", _positive_credits("credits")),
                credit_type=f.take("credit_type", validate.credit_type),
                amount=f.take("amount", _minor_units("amount", 1)),
                currency=f.take("currency", _currency),
                active=f.take_or("active", _boolean, True),
            )
        )
        f.done()
        refusal = pricing.stripe_refusal(packs[-1].amount, packs[-1].currency)
        if refusal is not None:
            f.fail("amount", f"Stripe would refuse it: {_reason(refusal)}")
    _unique(source, "packs", [p.id for p in packs])
    return {"packs": tuple(packs)}


def _slabs(
    source: str, where: str, raw: list[object], mode: pricing.Mode, minimum: int
) -> tuple[Slab, ...]:
    """Ascending and contiguous; only the last may omit `to`; the minimum has a price."""
    slabs: list[Slab] = []
    for i, table in enumerate(raw):
        f = _Fields(source, f"{where}.slabs[{i}]", table, SLAB_KEYS)
        low = f.take("from", _positive_credits("from"))
        high = f.take_or("to", _positive_credits("to"), None)
        unit = f.take("unit_amount", _minor_units("unit_amount", 0))
        f.done()
        if high is not None and high < low:
            f.fail("to", f"must be at least from ({low})")
        if not slabs and mode == "graduated" and low != 1:
            f.fail("from", "must be 1: in graduated mode every credit is priced by a slab")
        if not slabs and low > minimum:
            f.fail("from", f"must be at most the minimum ({minimum}), so the minimum has a price")
        if slabs and slabs[-1].to_credits is None:
            raise CatalogError(
                f"{source}: {where}.slabs[{i - 1}].to: is required (only the last slab may omit it)"
            )
        if slabs and low != (slabs[-1].to_credits or 0) + 1:
            prev_to = slabs[-1].to_credits
            f.fail("from", f"must be {(prev_to or 0) + 1}: the previous slab ends at {prev_to}")
        slabs.append(Slab(low, high, unit))
    top = slabs[-1].to_credits
    if top is not None and minimum > top:
        raise CatalogError(f"{source}: {where}.minimum: is above the last slab's to ({top})")
    return tuple(slabs)


def _parse_prices(source: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CatalogError(f"{source}: prices: must be written as [prices.<credit_type>]")
    tables = []
    for credit_type, table in value.items():
        where = f"prices.{credit_type}"
        if not validate.CREDIT_TYPE_RE.fullmatch(credit_type):
            raise CatalogError(f"{source}: {where}: a credit type is 1-32 of [a-z0-9_]")
        f = _Fields(source, where, table, PRICE_KEYS)
        currency = f.take("currency", _currency)
        mode = f.take("mode", _mode)
        minimum = f.take("minimum", _positive_credits("minimum"))
        raw = f.take("slabs", _slab_list)
        f.done()
        slabs = _slabs(source, where, raw, mode, minimum)
        table = PriceTable(credit_type, currency, mode, minimum, slabs)
        try:
            smallest = pricing.price(table, minimum).amount
        except pricing.PricingError as exc:
            f.fail("minimum", _reason(exc))
        refusal = pricing.stripe_refusal(smallest, currency)
        if refusal is not None:
            f.fail("minimum", f"Stripe would refuse its price: {_reason(refusal)}")
        tables.append(table)
    return {"prices": tuple(tables)}


def _reason(exc: pricing.PricingError) -> str:
    return str(exc).removeprefix(f"{exc.field}: ")


def _parse_plans(source: str, value: object) -> dict[str, Any]:
    plans = []
    for f in _tables(source, "plans", value, single_ok=False, known=PLAN_KEYS):
        plans.append(
            Plan(
                id=f.named("plans", f.take("id", _catalog_id)),
                display_name=f.take_or("display_name", _display_name, ""),
                stripe_price_id=f.take("stripe_price_id", _stripe_price_id),
                allocations=f.take("allocations", _allocations),
                rollover_cap=f.take("rollover_cap", lambda v: validate.credits("rollover_cap", v)),
                discount_percent=f.take("discount_percent", _percent),
                expire_at_period_end=f.take_or("expire_at_period_end", _boolean, True),
                active=f.take_or("active", _boolean, True),
            )
        )
        f.done()
    _unique(source, "plans", [p.id for p in plans])
    by_price: dict[str, str] = {}
    for p in plans:
        other = by_price.setdefault(p.stripe_price_id, p.id)
        if other != p.id:
            raise CatalogError(
                f"{source}: plans[{p.id}].stripe_price_id: {p.stripe_price_id} is plan "
                f"{other}'s already"
            )
    return {"plans": tuple(plans)}


# Top-level section -> parser returning Catalog fields.
SECTIONS: dict[str, Callable[[str, object], dict[str, Any]]] = {
    "tools": _parse_tools,
    "welcome": _parse_welcome,
    "packs": _parse_packs,
    "prices": _parse_prices,
    "plans": _parse_plans,
}


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    fields: dict[str, Any] = {}
    for section, value in doc.items():
        parser = SECTIONS.get(section)
        if parser is None:
            known = ", ".join(SECTIONS)
            raise CatalogError(f"{source}: {section}: unknown section (known: {known})")
        fields.update(parser(source, value))
    return Catalog(source=source, **fields)


def load_catalog(path: str | Path) -> Catalog:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalog file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from exc
    return parse_catalog(text, str(path))


# --- applying -------------------------------------------------------------------------------


def _active(active: bool) -> str:
    return "active" if active else "inactive"


def tool_change(old: Tool | None, new: Tool) -> str | None:
    """One readable line saying how `new` differs from `old`; None when they are equal."""
    if old is None:
        limit = f", at most {new.rate_limit} per account" if new.rate_limit else ""
        return (
            f"tool {new.name}: added, {new.cost} {new.credit_type} per unit{limit}, "
            f"{_active(new.active)}"
        )
    diffs = []
    for field in ("cost", "credit_type"):
        if getattr(old, field) != getattr(new, field):
            diffs.append(f"{field} {getattr(old, field)} -> {getattr(new, field)}")
    if old.active != new.active:
        diffs.append(f"{_active(old.active)} -> {_active(new.active)}")
    for field in ("display_name", "description"):
        if getattr(old, field) != getattr(new, field):
            diffs.append(f"{field} {getattr(old, field)!r} -> {getattr(new, field)!r}")
    if old.rate_limit != new.rate_limit:
        diffs.append(f"rate limit {old.rate_limit or 'none'} -> {new.rate_limit or 'none'}")
    return f"tool {new.name}: " + ", ".join(diffs) if diffs else None


def _expiry(expires_in_s: int | None) -> str:
    if expires_in_s is None:
        return "never expires"
    days, rest = divmod(expires_in_s, SECONDS_PER_DAY)
    return (
        f"expires {days} days after it is granted"
        if not rest
        else f"expires after {expires_in_s} s"
    )


def _welcome_change(old: WelcomeGrant | None, new: WelcomeGrant) -> str | None:
    if new.amount == 0:
        return None if old is None else f"welcome grant {new.credit_type}: removed"
    if old == new:
        return None
    verb = "added" if old is None else "now"
    return (
        f"welcome grant {new.credit_type}: {verb} {new.amount} {new.category}, "
        f"priority {new.priority}, {_expiry(new.expires_in_s)}"
    )


def _sql_welcome(engine: Engine) -> dict[str, WelcomeGrant]:
    with engine.connect() as conn:
        rows = conn.execute(select(T_WELCOME)).mappings()
        return {
            r["credit_type"]: WelcomeGrant(
                credit_type=r["credit_type"],
                amount=r["amount"],
                category=r["category"],
                priority=r["priority"],
                expires_in_s=r["expires_in_s"],
            )
            for r in rows
        }


def _diffs(old: Any, new: Any, values: tuple[str, ...], texts: tuple[str, ...]) -> list[str]:
    """`field old -> new` for each field that differs: values, then active, then texts."""
    diffs = [
        f"{f} {getattr(old, f)} -> {getattr(new, f)}"
        for f in values
        if getattr(old, f) != getattr(new, f)
    ]
    if old.active != new.active:
        diffs.append(f"{_active(old.active)} -> {_active(new.active)}")
    diffs += [
        f"{f} {getattr(old, f)!r} -> {getattr(new, f)!r}"
        for f in texts
        if getattr(old, f) != getattr(new, f)
    ]
    return diffs


def _pack_change(old: Pack | None, new: Pack) -> str | None:
    if old is None:
        return (
            f"pack {new.id}: added, {new.credits} {new.credit_type} for {new.amount} "
            f"{new.currency}, {_active(new.active)}"
        )
    diffs = _diffs(old, new, ("credits", "credit_type", "amount", "currency"), ("display_name",))
    return f"pack {new.id}: " + ", ".join(diffs) if diffs else None


def _allocations_text(allocations: dict[str, int]) -> str:
    return " + ".join(f"{credits} {ct}" for ct, credits in allocations.items())


def _plan_change(old: Plan | None, new: Plan) -> str | None:
    if old is None:
        expiry = "expires at period end" if new.expire_at_period_end else "kept after the period"
        return (
            f"plan {new.id}: added, {new.stripe_price_id}, "
            f"{_allocations_text(new.allocations)} per period, rollover cap {new.rollover_cap}, "
            f"{new.discount_percent}% off purchases, {expiry}, {_active(new.active)}"
        )
    diffs = _diffs(
        old,
        new,
        ("stripe_price_id", "rollover_cap", "discount_percent", "expire_at_period_end"),
        ("display_name",),
    )
    if old.allocations != new.allocations:
        old_text, new_text = _allocations_text(old.allocations), _allocations_text(new.allocations)
        diffs.insert(0, f"allocations {old_text} -> {new_text}")
    return f"plan {new.id}: " + ", ".join(diffs) if diffs else None


E = TypeVar("E", Pack, Plan)


def _declare(
    kind: str,
    current: dict[str, E],
    wanted: tuple[E, ...],
    change: Callable[[E | None, E], str | None],
) -> tuple[list[str], list[E]]:
    """What to write so SQL holds `wanted`: the changed entries, and every other active one
    switched off (never deleted)."""
    lines, writes = [], []
    for new in wanted:
        line = change(current.get(new.id), new)
        if line:
            lines.append(line)
            writes.append(new)
    named = {new.id for new in wanted}
    for old in current.values():
        if old.id not in named and old.active:
            lines.append(f"{kind} {old.id}: not in the file, active -> inactive")
            writes.append(replace(old, active=False))
    return lines, writes


def _pack_changes(engine: Engine, packs: tuple[Pack, ...] | None) -> tuple[list[str], list[Pack]]:
    if packs is None:
        return [], []
    current = {p.id: p for p in pricing.load_packs(engine, active_only=False)}
    return _declare("pack", current, packs, _pack_change)


def _plan_changes(engine: Engine, catalog: Catalog) -> tuple[list[str], list[Plan]]:
    if catalog.plans is None:
        return [], []
    current = {p.id: p for p in pricing.load_plans(engine, active_only=False)}
    # A plan the file omits keeps its price id (subscriptions name it): no other plan may take it.
    named = {p.id for p in catalog.plans}
    owners = {p.stripe_price_id: p.id for p in current.values() if p.id not in named}
    for p in catalog.plans:
        owner = owners.get(p.stripe_price_id)
        if owner is not None:
            raise CatalogError(
                f"{catalog.source}: plans[{p.id}].stripe_price_id: {p.stripe_price_id} is "
                f"plan {owner}'s (plans are never deleted): give {p.id} another price"
            )
    return _declare("plan", current, catalog.plans, _plan_change)


def _slab_text(s: Slab) -> str:
    span = f"{s.from_credits}+" if s.to_credits is None else f"{s.from_credits}-{s.to_credits}"
    return f"{span} at {s.unit_amount}"


def _prices_text(t: PriceTable) -> str:
    slabs = ", ".join(_slab_text(s) for s in t.slabs)
    return f"{t.mode}, minimum {t.min_credits}, {slabs} ({t.currency} minor units per credit)"


def _price_changes(
    engine: Engine, tables: tuple[PriceTable, ...] | None
) -> tuple[list[str], list[PriceTable], list[str]]:
    """(lines, the tables to write, the credit types whose slabs go)."""
    if tables is None:
        return [], [], []
    current = pricing.load_prices(engine)
    lines, writes = [], []
    for t in tables:
        old = current.get(t.credit_type)
        if old != t:
            verb = "added," if old is None else "now"
            lines.append(f"prices {t.credit_type}: {verb} {_prices_text(t)}")
            writes.append(t)
    named = {t.credit_type for t in tables}
    removed = [ct for ct in current if ct not in named]
    lines += [f"prices {ct}: removed, not in the file" for ct in removed]
    return lines, writes, removed


def write_replicas(engine: Engine, meter: Meter) -> None:
    """Every bucket's Redis replica gets every SQL tool (merged), so a replica that was
    missing is never left holding only the tools that just changed."""
    meter.set_tools(list_tools(engine))


def apply_catalog(
    engine: Engine, meter: Meter, catalog: Catalog, *, actor: str = "cli"
) -> list[str]:
    """Writes what differs to SQL, then every Redis replica; returns one line per change
    (none when SQL already matches the file). The changes are audited as `actor`'s."""
    current_tools = {t.name: t for t in list_tools(engine)}
    changed_tools, lines = [], []
    for tool in catalog.tools:
        line = tool_change(current_tools.get(tool.name), tool)
        if line:
            changed_tools.append(tool)
            lines.append(line)
    current_welcome = _sql_welcome(engine)
    changed_welcome = []
    for grant in catalog.welcome:
        line = _welcome_change(current_welcome.get(grant.credit_type), grant)
        if line:
            changed_welcome.append(grant)
            lines.append(line)
    pack_lines, packs = _pack_changes(engine, catalog.packs)
    price_lines, prices, unpriced = _price_changes(engine, catalog.prices)
    plan_lines, plans = _plan_changes(engine, catalog)
    lines += pack_lines + price_lines + plan_lines
    if changed_tools:
        save_tools(engine, changed_tools)
    for g in changed_welcome:
        set_welcome_grant(
            engine,
            g.credit_type,
            g.amount,
            category=g.category,
            priority=g.priority,
            expires_in_s=g.expires_in_s,
        )
    if packs:
        pricing.save_packs(engine, packs)
    if prices or unpriced:
        pricing.replace_prices(engine, prices, unpriced)
    if plans:
        pricing.save_plans(engine, plans)
    if lines:
        audit.record(engine, actor, "catalog.apply", catalog.source, {"changes": lines})
    write_replicas(engine, meter)
    return lines
