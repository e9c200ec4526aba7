"""The Lua scripts use exactly the names Python declares (meter.signatures, meter.wire): each
script's header lists its KEYS, ARGV and reply fields as its Signature does; the code reads no
KEYS[n] / ARGV[n] past them; every journal_add site writes only declared journal fields and
every declared field is written; the wallet hash, hold record and category codes match."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.resources import files

import pytest

from meter import signatures, wire
from meter.models import ChargePart, ChargeRecord
from meter.signatures import Group, flat_names
from tests.meter.helpers import make_meter

LUA = files("meter.lua")
SCRIPTS = sorted(signatures.ALL)
_MARKER = re.compile(r"\b(KEYS|ARGV)\[([^\]]+)\]")
_NAME = re.compile(r"\s*([a-z_]+)")
_PARENS = re.compile(r"\([^()]*\)")


def _source(path: str) -> str:
    return LUA.joinpath(path).read_text(encoding="utf-8")


def _header(script: str) -> str:
    text = _source(f"{script}.lua")
    assert text.startswith("--[["), f"{script}.lua has no header"
    return text[: text.index("]]")]


def _body(script: str) -> str:
    text = _source(f"{script}.lua")
    return text[text.index("]]") + 2 :]


def _names(listing: str) -> list[str]:
    """`a (why), b, c` -> [a, b, c]; each item must start with an identifier."""
    out = []
    for item in _PARENS.sub("", listing).split(","):
        m = re.fullmatch(r"\s*([a-z_]+)\s*", item)
        assert m, f"not a declared name: {item!r}"
        out.append(m.group(1))
    return out


def header_input(script: str) -> dict[str, list[tuple[str, list[str]]]]:
    """KEYS and ARGV of the header's Input: [(index as written, names)] in order. A marker
    whose index has `i` is a group (`per charge i: a, b, c`); any other names one value."""
    header = _header(script)
    start = header.index("Input:")
    end = min(i for i in (header.find("Publishes"), header.find("Output")) if i > start)
    text = header[start:end]
    out: dict[str, list[tuple[str, list[str]]]] = {"KEYS": [], "ARGV": []}
    markers = list(_MARKER.finditer(text))
    for m, after in zip(markers, [*markers[1:], None], strict=True):
        segment = text[m.end() : after.start() if after else len(text)]
        if re.search(r"(^|[\s\d+])i\b", m.group(2)):
            out[m.group(1)].append((m.group(2), _names(segment.split(":", 1)[1])))
        else:
            name = _NAME.match(segment)
            assert name, f"{script}: {m.group(0)} names nothing"
            out[m.group(1)].append((m.group(2), [name.group(1)]))
    return out


def header_reply(script: str) -> list[str]:
    header = _header(script)
    output = header[header.index("Output:") :]
    first = re.search(r"\{([^{}]*)\}", output)
    assert first, f"{script}: no reply in Output"
    code, *fields = _PARENS.sub("", first.group(1)).split(",")
    assert re.fullmatch(r"\s*0(\|1 replayed)?\s*", code), f"{script}: OK reply code {code!r}"
    return _names(",".join(fields))


@pytest.mark.parametrize("script", SCRIPTS)
def test_header_lists_the_declared_keys_args_and_reply_fields(script: str) -> None:
    sig = signatures.ALL[script]
    found = header_input(script)
    assert [n for _, names in found["KEYS"] for n in names] == flat_names(sig.keys)
    assert [n for _, names in found["ARGV"] for n in names] == flat_names(sig.args)
    assert header_reply(script) == list(sig.reply)


def _fixed(slots: tuple[signatures.Slot, ...]) -> int:
    """Slots before the first group: the indexes a script may read as KEYS[n] / ARGV[n]."""
    for i, slot in enumerate(slots):
        if isinstance(slot, Group):
            return i + 1 if slot.counted else i  # a counted group's count has its own index
    return len(slots)


@pytest.mark.parametrize("script", SCRIPTS)
def test_header_numbers_the_fixed_slots_in_order(script: str) -> None:
    sig = signatures.ALL[script]
    found = header_input(script)
    for kind, slots in (("KEYS", sig.keys), ("ARGV", sig.args)):
        plain = [index for index, _ in found[kind][: _fixed(slots)]]
        assert plain == [str(n) for n in range(1, _fixed(slots) + 1)], (kind, plain)


@pytest.mark.parametrize("script", SCRIPTS)
def test_code_reads_no_fixed_slot_past_the_declared_ones(script: str) -> None:
    sig = signatures.ALL[script]
    body = _body(script)
    for kind, slots in (("KEYS", sig.keys), ("ARGV", sig.args)):
        used = {int(n) for n in re.findall(rf"\b{kind}\[(\d+)\]", body)}
        fixed = _fixed(slots)
        assert max(used, default=0) <= fixed, (kind, sorted(used), fixed)
        if fixed == len(slots):  # no group: every declared slot is read
            assert used == set(range(1, fixed + 1)), (kind, sorted(used))


def test_balance_grants_are_listed_as_declared() -> None:
    m = re.search(r"grants: flat, per grant: ([^\n]+)", _header("balance"))
    assert m and _names(m.group(1)) == list(signatures.BALANCE_GRANT)


def _lua_files() -> Iterator[tuple[str, str]]:
    for folder in (LUA, LUA.joinpath("includes")):
        for entry in folder.iterdir():
            if entry.name.endswith(".lua"):
                yield entry.name, entry.read_text(encoding="utf-8")


def _call_args(text: str, start: int) -> str:
    """The argument text of the call whose '(' is at start (balanced, Lua strings skipped)."""
    depth, i = 0, start
    while True:
        ch = text[i]
        if ch in "'\"":
            i = text.index(ch, i + 1)
        elif ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1


def _top_level(args: str) -> list[str]:
    """Splits at commas outside parentheses, braces and strings."""
    out, depth, cur, i = [], 0, "", 0
    while i < len(args):
        ch = args[i]
        if ch in "'\"":
            j = args.index(ch, i + 1)
            cur += args[i : j + 1]
            i = j + 1
            continue
        depth += ch in "({"
        depth -= ch in ")}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    return [*out, cur.strip()] if cur.strip() else out


def _literal(code: str) -> str:
    """A field name as the Lua code writes it: a string literal, never computed."""
    m = re.fullmatch(r"'([a-z]+)'", code)
    assert m, f"a field name is not a literal: {code!r}"
    return m.group(1)


def journal_fields_written() -> dict[str, set[str]]:
    """Field name -> the files whose journal_add calls write it."""
    out: dict[str, set[str]] = {}
    for name, text in _lua_files():
        for m in re.finditer(r"(?<!function )\bjournal_add\(ctx", text):
            args = _top_level(_call_args(text, m.end() - 4))
            table = args[5]
            assert table.startswith("{") and table.endswith("}"), f"{name}: {table[:40]}"
            items = _top_level(table[1:-1])
            for key in items[::2]:
                out.setdefault(_literal(key), set()).add(name)
    return out


def test_every_journal_add_site_writes_exactly_the_declared_fields() -> None:
    text = _source("includes/journal_add.lua")
    base = re.search(r"local args = \{ctx\.journal, '\*', (.*?)\}", text, re.S)
    assert base
    base_names = [_literal(k) for k in _top_level(base.group(1))[::2]]
    assert base_names == [f.value for f in wire.JOURNAL_BASE_FIELDS]
    optional = {f.value for f in wire.JournalField} - set(base_names)
    packed = {f.value for f in wire.CHARGE_PACKED_FIELDS} | {wire.JournalField.CHARGE.value}
    assert set(journal_fields_written()) | packed | set(charge_fields_written()) >= optional
    assert set(journal_fields_written()) <= optional


def charge_fields_written() -> list[str]:
    """The optional field names journal_add_charge's call site writes (its packed fields are
    checked by the round trip through sync.journal.parse)."""
    text = _source("includes/charge_one.lua")
    m = re.search(r"\bjournal_add_charge\(ctx", text)
    assert m, "charge_one does not journal with journal_add_charge"
    args = _top_level(_call_args(text, m.end() - 4))
    table = args[-1]
    assert table.startswith("{") and table.endswith("}"), table[:40]
    names = [_literal(k) for k in _top_level(table[1:-1])[::2]]
    assert set(names) <= {f.value for f in wire.JournalField}, names
    return names


def test_wallet_hash_fields_are_the_declared_ones() -> None:
    text = _source("includes/wallet_load.lua")
    assert set(re.findall(r"f == '(\w+)'", text)) == {f.value for f in wire.WalletField}
    assert set(re.findall(r"p == '(\w:)'", text)) == {wire.GRANT_PREFIX, wire.HOLD_PREFIX}
    assert set(re.findall(r"rp == '(\w+:)'", text)) == {wire.RATE_TAT_PREFIX}


def test_category_codes_are_the_declared_ones() -> None:
    tables = [
        m.group(1)
        for _, text in _lua_files()
        for m in re.finditer(r"local cats = \{([^}]*)\}", text)
    ]
    assert tables, "no category table found"
    for table in tables:
        pairs = dict(re.findall(r"(\w+) = '(\w)'", table))
        assert pairs == wire.CATEGORY_CODES


def _hold_keys(script: str) -> set[str]:
    """The KEYS[...] index texts the header names `hold`."""
    return {index for index, names in header_input(script)["KEYS"] if "hold" in names}


def test_hold_records_are_written_with_the_declared_fields() -> None:
    written: set[str] = set()
    for script in SCRIPTS:
        body = _body(script)
        for index in _hold_keys(script):
            for m in re.finditer(rf"redis\.call\('HSET', KEYS\[{re.escape(index)}\]", body):
                args = _top_level(_call_args(body, m.start() + len("redis.call")))
                written.update(_literal(k) for k in args[2::2])
    assert written == {f.value for f in wire.HoldField}


def test_a_call_missing_a_declared_name_or_giving_another_is_refused() -> None:
    prune = signatures.CONSUMER_PRUNE
    assert prune.arg_list(group="flush", consumer="host:1") == ["flush", "host:1"]
    with pytest.raises(AssertionError):
        prune.arg_list(group="flush")
    with pytest.raises(AssertionError):
        prune.arg_list(group="flush", consumer="host:1", extra="x")


def test_groups_are_laid_out_item_by_item_a_counted_one_after_its_count() -> None:
    grant = {"grant_id": "g1", "remaining": "5", "priority": "50", "expires_ms": "0"}
    args = signatures.HYDRATE.arg_list(
        account_id="a",
        credit_type="credits",
        overdraft_limit="0",
        status="active",
        rate_limits="",
        debt="0",
        grants=[{**grant, "category": "paid"}, {**grant, "grant_id": "g2", "category": "paid"}],
        holds=[],
        due_member="m",
        low_threshold="100",
        topup_threshold="",
    )
    assert args == [
        *["a", "credits", "0", "active", "", "0", "2"],
        *["g1", "5", "50", "0", "paid"],
        *["g2", "5", "50", "0", "paid"],
        *["0", "m", "100", ""],
    ]


def test_the_charge_record_and_breakdown_python_formats_are_the_ones_the_scripts_write(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool("GPT", 10)
    g = m.grant("acct", "credits", 100, category="paid", priority=50)
    c = m.charge("acct", "GPT")
    bucket = m.keys.bucket("acct")
    raw = m.redis.get(m.keys.charge(bucket, c.id))
    assert isinstance(raw, bytes)  # a charge without its own key: the full record is here
    assert len(raw.decode().split(wire.RECORD_SEP)) == wire.CHARGE_RECORD_FIELDS
    assert wire.charge_record_owner(raw.decode()) == wire.ChargeOwner("acct", "credits", None)
    keyed = m.charge("acct", "GPT", idempotency_key="k1")
    pointer = m.redis.get(m.keys.charge(bucket, keyed.id))
    assert isinstance(pointer, bytes)
    assert wire.charge_record_owner(pointer.decode()) == wire.ChargeOwner("acct", "credits", "k1")
    full = m.redis.get(m.keys.idempotency("acct", "k1"))
    assert isinstance(full, bytes)
    assert len(full.decode().split(wire.RECORD_SEP)) == wire.CHARGE_RECORD_FIELDS
    settled = m.hold("acct", "GPT").settle()  # settle writes the plain record
    plain = m.redis.get(m.keys.charge(bucket, settled.entry_id))
    assert isinstance(plain, bytes)
    part = ChargePart(g.grant_id, 10, 50, 0, wire.CATEGORY_CODES["paid"])
    assert plain.decode() == wire.charge_record_value(
        ChargeRecord("acct", "credits", "GPT", 10, 0, (part,))
    )
    assert wire.charge_record_owner(plain.decode()) == wire.ChargeOwner("acct", "credits", None)
    entries = m.redis.xrange(m.keys.journal(bucket))
    written = wire.unpack_charge({k.decode(): v.decode() for k, v in entries[1][1].items()})
    assert written[wire.JournalField.BREAKDOWN] == wire.format_breakdown(c.breakdown)
    assert wire.parse_breakdown(written[wire.JournalField.BREAKDOWN]) == c.breakdown
