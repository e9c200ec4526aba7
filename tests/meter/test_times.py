"""meter.times: the one RFC 3339 parser and formatter, in integer milliseconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.times import parse_rfc3339_ms, rfc3339

YEAR_10000_MS = 253_402_300_800_000


@given(st.integers(min_value=0, max_value=YEAR_10000_MS - 1))
def test_every_millisecond_round_trips_exactly(ms: int) -> None:
    assert parse_rfc3339_ms(rfc3339(ms)) == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-11-21T12:00:00Z", 1_795_262_400_000),
        ("2026-11-21T13:30:00+01:30", 1_795_262_400_000),
        ("2026-11-21t12:00:00.123456789z", 1_795_262_400_123),  # below the ms: dropped
        ("9999-12-31T23:59:59.999Z", YEAR_10000_MS - 1),
    ],
)
def test_offsets_fractions_and_far_dates_parse_to_whole_milliseconds(text: str, ms: int) -> None:
    assert parse_rfc3339_ms(text) == ms


def test_a_date_is_its_midnight_utc_only_where_dates_are_allowed() -> None:
    assert parse_rfc3339_ms("2026-11-21", date_ok=True) == 1_795_219_200_000
    with pytest.raises(ValueError, match="or a date"):
        parse_rfc3339_ms("soon", date_ok=True)
    with pytest.raises(ValueError, match="is not an RFC 3339 time"):
        parse_rfc3339_ms("2026-11-21")


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-21T12:00:00",
        "2026-11-21 12:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-21T12:00:00+24:00",
        "",
    ],
)
def test_no_offset_a_space_or_an_impossible_date_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339_ms(text)


def test_milliseconds_are_written_only_when_not_zero() -> None:
    assert rfc3339(1_795_262_400_000) == "2026-11-21T12:00:00Z"
    assert rfc3339(1_795_262_400_007) == "2026-11-21T12:00:00.007Z"
