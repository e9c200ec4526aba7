"""sync.journal: a journal entry parses to exactly what the scripts wrote, and anything else
is MalformedEntry with the reason (the flush dead-letters it at once)."""

from __future__ import annotations

import pytest

from meter import bounds, wire
from meter.models import GrantPart
from meter.wire import NewGrant
from sync.journal import (
    MalformedEntry,
    parse,
    raw_entry_id,
    sortable,
    stream_ms,
    unsortable,
)
from tests.meter.helpers import make_meter

CHARGE = {
    "id": "c1",
    "k": "charge",
    "a": "acct-1",
    "t": "credits",
    "m": "-5",
    "b": "95",
    "ts": "1700000000000",
    "g": "g1:-3:7;debt:-2:-2",
    "tool": "GPT",
    "q": "5",
    "ik": "key-1",
}


def _with(**fields: str | None) -> dict[str, str]:
    out = {**CHARGE, **fields}
    return {k: v for k, v in out.items() if v is not None}


def test_a_charge_parses_with_its_breakdown_and_optional_fields() -> None:
    e = parse("1700000000000-3", CHARGE)
    assert (e.id, e.kind, e.account_id, e.credit_type) == ("c1", "charge", "acct-1", "credits")
    assert (e.amount, e.balance_after, e.ts_ms) == (-5, 95, 1_700_000_000_000)
    assert e.parts == (GrantPart("g1", -3, 7), GrantPart("debt", -2, -2))
    assert e.new_grants == ()
    assert e.is_ledger
    assert e.get("tool") == "GPT" and e.int_field("q") == 5
    assert e.get("desc") is None and e.int_field("x") is None
    assert e.sort_id == sortable("1700000000000-3")


def _packed(entry: dict[str, str], **extra: str) -> dict[str, str]:
    """The entry as journal_add_charge writes it: its fixed fields packed in one value."""
    values = [entry[f.value] for f in wire.CHARGE_PACKED_FIELDS]
    return {wire.JournalField.CHARGE.value: wire.RECORD_SEP.join(values), **extra}


def test_a_packed_charge_parses_as_the_unpacked_entry_of_earlier_versions() -> None:
    packed = parse("1700000000000-3", _packed(CHARGE, ik="key-1", desc="d"))
    assert packed == parse("1700000000000-3", _with(desc="d"))
    raw = {k.encode(): v.encode() for k, v in _packed(CHARGE, ik="key-1").items()}
    assert parse("1-0", raw) == parse("1-0", CHARGE)


def test_a_packed_charge_with_a_missing_value_is_malformed() -> None:
    fields = _packed(CHARGE)
    fields["c"] = fields["c"].rsplit(wire.RECORD_SEP, 1)[0]
    with pytest.raises(MalformedEntry, match="bad packed charge"):
        parse("1700000000000-3", fields)


def test_the_raw_entry_id_is_read_from_packed_and_unpacked_entries() -> None:
    assert raw_entry_id(_packed(CHARGE)) == "c1"
    assert raw_entry_id(CHARGE) == "c1"
    assert raw_entry_id({"k": "charge"}) is None


def test_a_packed_charge_without_its_own_key_gets_its_id_as_the_key() -> None:
    e = parse("1-0", _packed(CHARGE))
    assert e.get(wire.JournalField.IDEMPOTENCY_KEY) == "c1"
    assert e == parse("1-0", _with(ik="c1"))


def test_a_charge_journaled_by_the_script_parses_to_what_it_charged(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    try:
        m.set_tool("GPT", 3)
        m.grant("acct-1", "credits", 100)
        mine = m.charge("acct-1", "GPT", 2, idempotency_key="own", description="d")
        plain = m.charge("acct-1", "GPT")
        stream = m.redis.xrange(m.keys.journal(m.keys.bucket("acct-1")))
    finally:
        m.redis.close()
    (sid1, raw1), (sid2, raw2) = stream[-2:]
    assert set(raw1) == {b"c", b"ik", b"desc"} and set(raw2) == {b"c"}
    e1, e2 = parse(sid1.decode(), raw1), parse(sid2.decode(), raw2)
    assert (e1.id, e1.kind, e1.account_id, e1.credit_type) == (
        mine.id,
        "charge",
        "acct-1",
        "credits",
    )
    assert (e1.amount, e1.balance_after, e1.parts) == (-6, mine.balance, mine.breakdown)
    assert (e1.get("tool"), e1.int_field("q"), e1.get("ik"), e1.get("desc")) == (
        "GPT",
        2,
        "own",
        "d",
    )
    assert (e2.id, e2.amount, e2.get("ik")) == (plain.id, -3, plain.id)


def test_bytes_as_redis_returns_them_parse_like_text() -> None:
    raw = {k.encode(): v.encode() for k, v in CHARGE.items()}
    assert parse("1-0", raw) == parse("1-0", CHARGE)


def test_new_grants_parse_category_priority_and_expiry() -> None:
    e = parse(
        "1-0",
        _with(
            k="grant", m="30", b="30", g="g1:10:10;g2:20:20", ng="g1:p:50:0;g2:r:10:1800000000000"
        ),
    )
    assert e.new_grants == (
        NewGrant("g1", "paid", 50, None),  # 0: never expires
        NewGrant("g2", "promotional", 10, 1_800_000_000_000),
    )


def test_a_hold_event_is_not_a_ledger_entry_and_its_breakdown_need_not_add_up() -> None:
    e = parse("1-0", _with(k="hold_open", m="10", g="g1:-1:9", x="1800000000000"))
    assert not e.is_ledger
    assert e.int_field("x") == 1_800_000_000_000


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"k": "gift"}, "unknown kind 'gift'"),
        ({"c": "c1\x1facct-1"}, "bad packed charge 'c1\\x1facct-1'"),
        ({"k": None}, "unknown kind ''"),
        ({"id": None}, "field 'id' missing or too long"),
        ({"id": "i" * (bounds.ID_LEN_MAX + 1)}, "field 'id' missing or too long"),
        ({"a": ""}, "field 'a' missing or too long"),
        ({"a": "a" * (bounds.ACCOUNT_ID_LEN_MAX + 1)}, "field 'a' missing or too long"),
        ({"t": "c" * (bounds.CREDIT_TYPE_LEN_MAX + 1)}, "field 't' missing or too long"),
        ({"m": "ten"}, "field 'm' is not an integer: 'ten'"),
        ({"m": None}, "field 'm' missing"),
        ({"m": str(-bounds.CREDITS_MAX - 1)}, "field 'm' out of range"),
        ({"b": "1.5"}, "field 'b' is not an integer"),
        ({"ts": "-1"}, "field 'ts' out of range: -1"),
        ({"q": "x"}, "field 'q' is not an integer"),
        ({"x": str(bounds.CREDITS_MAX + 1)}, "field 'x' out of range"),
        ({"meta": "{not json"}, "field 'meta' is not JSON"),
        ({"g": "g1:-5"}, "bad breakdown part 'g1:-5'"),
        ({"g": ":-5:0"}, "bad breakdown part ':-5:0'"),
        ({"g": "g1:-five:0"}, "bad breakdown part 'g1:-five:0'"),
        ({"g": "g1:-4:6"}, "breakdown does not add up to the amount"),
        ({"ng": "g1:x:50:0"}, "bad new grant 'g1:x:50:0'"),
        ({"ng": "g1:p:50"}, "bad new grant 'g1:p:50'"),
        ({"ng": ":p:50:0"}, "bad new grant ':p:50:0'"),
        ({"ng": "g1:p:high:0"}, "bad new grant 'g1:p:high:0'"),
    ],
)
def test_a_malformed_entry_says_why(fields: dict[str, str | None], reason: str) -> None:
    with pytest.raises(MalformedEntry) as info:
        parse("1-0", _with(**fields))
    assert str(info.value).startswith(reason), str(info.value)


def test_a_long_bad_value_is_cut_in_the_reason() -> None:
    with pytest.raises(MalformedEntry) as info:
        parse("1-0", _with(m="9" * 30 + "x" * 100))
    assert len(str(info.value)) < 100


def test_sortable_ids_sort_like_stream_ids_and_convert_back() -> None:
    ids = ["9-0", "10-0", "10-2", "10-10", "1700000000000-0"]
    assert sorted(ids, key=sortable) == ids
    assert sorted(sortable(i) for i in ids) == [sortable(i) for i in ids]
    assert [unsortable(sortable(i)) for i in ids] == ids
    assert sortable("42") == sortable("42-0")
    assert stream_ms("1700000000000-7") == 1_700_000_000_000


def test_alert_flags_parse_and_a_malformed_one_is_a_malformed_entry() -> None:
    from meter.wire import Alert, Alerts

    assert parse("1-0", CHARGE).alerts is None
    e = parse("1-0", _with(al="ldt|-3|10"))
    assert e.alerts == Alerts(frozenset({Alert.LOW, Alert.DEPLETED, Alert.TOPUP}), -3, 10)
    assert parse("1-0", _with(al="d|0|")).alerts == Alerts(frozenset({Alert.DEPLETED}), 0, None)
    for bad in ("x|1|", "l|1|", "d|1|5", "|1|", "l|one|5", "l|1", "d|1||"):
        with pytest.raises(MalformedEntry):
            parse("1-0", _with(al=bad))
