"""The catalog file (`examples/catalog.toml`, `creditmeter up --catalog FILE`): parsed
strictly, then applied to SQL first and to every bucket's Redis replica after.

Each top-level section has one parser in SECTIONS and one field in Catalog; a new section
(packs, price slabs, plans) is a parser, a field and an apply step. A section or key the
parser does not know is an error naming the file and the field, never silently skipped.

Applying merges: what the file names is set, what it omits is left as it is. A tool is
switched off with `active = false` (tools are never deleted: ledger entries name them); a
welcome grant is removed with `amount = 0`. A second apply of the same file changes nothing
and reports nothing. SQL is written in one transaction per section; a failure part-way
leaves SQL partly applied, and applying the file again completes it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Engine, select

from meter import Meter, bounds, validate
from meter.errors import InvalidArgument
from meter.models import Tool
from sync import audit
from sync.catalog import save_tools, set_welcome_grant
from sync.models import T_WELCOME
from sync.tools import list_tools

DISPLAY_NAME_LEN_MAX = 255  # the tools.display_name column is VARCHAR(255)
EXPIRES_IN_DAYS_MAX = 3_650  # ten years; more is likely seconds or ms typed as days
SECONDS_PER_DAY = 86_400

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


# --- parsing --------------------------------------------------------------------------------


class _Fields:
    """One TOML table being read: each key taken once, then any key left over is an error."""

    def __init__(self, source: str, where: str, table: object) -> None:
        self.source = source
        self.where = where
        if not isinstance(table, dict):
            self.fail("", "must be a table")
        self.table: dict[str, Any] = dict(table)

    def fail(self, key: str, message: str) -> NoReturn:
        field = f"{self.where}.{key}" if key else self.where
        raise CatalogError(f"{self.source}: {field}: {message}")

    def take(self, key: str, check: Callable[[object], T]) -> T:
        """The checked value of a required key."""
        if key not in self.table:
            self.fail(key, "is required")
        return self._check(key, check)

    def take_or(self, key: str, check: Callable[[object], T], default: D) -> T | D:
        """The checked value of an optional key, or `default` when it is absent."""
        return self._check(key, check) if key in self.table else default

    def _check(self, key: str, check: Callable[[object], T]) -> T:
        try:
            return check(self.table.pop(key))
        except InvalidArgument as exc:
            self.fail(key, str(exc).removeprefix(f"{exc.field}: "))

    def named(self, section: str, name: str) -> str:
        """Messages name the entry (`tools[IMAGE_GEN]`) once its name is known."""
        self.where = f"{section}[{name}]"
        return name

    def done(self) -> None:
        for key in self.table:
            self.fail(key, "unknown key")


def _boolean(value: object) -> bool:
    if type(value) is not bool:
        raise InvalidArgument("value", "must be true or false")
    return value


def _display_name(value: object) -> str:
    return validate.text("display_name", value, DISPLAY_NAME_LEN_MAX)


def _description(value: object) -> str:
    return validate.text("description", value, bounds.DESCRIPTION_LEN_MAX)


def _expires_in_s(days: object) -> int:
    return validate.integer("expires_in_days", days, 1, EXPIRES_IN_DAYS_MAX) * SECONDS_PER_DAY


def _tables(source: str, section: str, value: object, single_ok: bool) -> list[_Fields]:
    """`[[section]]` (an array of tables), or `[section]` (one table) when single_ok."""
    if isinstance(value, dict) and single_ok:
        return [_Fields(source, section, value)]
    if not isinstance(value, list):
        shape = f"[[{section}]] or [{section}]" if single_ok else f"[[{section}]]"
        raise CatalogError(f"{source}: {section}: must be written as {shape}")
    return [_Fields(source, f"{section}[{i}]", t) for i, t in enumerate(value)]


def _unique(source: str, section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise CatalogError(f"{source}: {section}[{i}]: {name} is listed twice")
        seen.add(name)


def _parse_tools(source: str, value: object) -> dict[str, Any]:
    tools = []
    for f in _tables(source, "tools", value, single_ok=False):
        tools.append(
            Tool(
                name=f.named("tools", f.take("name", validate.tool)),
                display_name=f.take_or("display_name", _display_name, ""),
                description=f.take_or("description", _description, ""),
                cost=f.take("cost", lambda v: validate.credits("cost", v)),
                credit_type=f.take("credit_type", validate.credit_type),
                active=f.take_or("active", _boolean, True),
            )
        )
        f.done()
    _unique(source, "tools", [t.name for t in tools])
    return {"tools": tuple(tools)}


def _parse_welcome(source: str, value: object) -> dict[str, Any]:
    grants = []
    for f in _tables(source, "welcome", value, single_ok=True):
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


# Top-level section -> parser returning Catalog fields. Issue 5 adds packs, prices, plans.
SECTIONS: dict[str, Callable[[str, object], dict[str, Any]]] = {
    "tools": _parse_tools,
    "welcome": _parse_welcome,
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
        return (
            f"tool {new.name}: added, {new.cost} {new.credit_type} per unit, {_active(new.active)}"
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
    if lines:
        audit.record(engine, actor, "catalog.apply", catalog.source, {"changes": lines})
    write_replicas(engine, meter)
    return lines
