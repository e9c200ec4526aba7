"""The admin reports against figures worked out by hand from tests/sync/reports_fixtures.py
(each expected row says where it comes from), on a database of their own; and the parsing
of what a user types for them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from sync.reports import (
    OPEN_HOLDS_LIMIT_MAX,
    REVENUE_GROUPS,
    TOP_LIMIT_MAX,
    USAGE_GROUPS,
    Range,
    Report,
    ReportError,
    liability,
    liability_series,
    open_holds,
    parse_group_by,
    parse_range,
    revenue,
    top_consumers,
    usage,
)
from tests.sync.reports_fixtures import DAY, NOV1, NOW, at, load, private_database

NOV = Range(at(0), at(4))  # [2026-11-01, 2026-11-05): Nov 1 to 4


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    shared = os.environ.get("TEST_DATABASE_URL")
    with private_database(shared, tmp_path_factory.mktemp("reports")) as engine:
        load(engine)
        yield engine


# --- usage ---------------------------------------------------------------------------------


def test_usage_by_day_and_tool(db: Engine) -> None:
    report = usage(db, NOV, ("day", "tool"))
    assert report.name == "usage"
    assert report.columns == ("day", "tool", "charges", "refunds", "credits")
    assert report.rows == [
        ("2026-11-01", "chat", 1, 0, 30),  # e05, at 23:59:59.999
        ("2026-11-01", "image", 2, 0, 20),  # e03 (exactly at from), e04
        ("2026-11-02", "chat", 1, 0, 50),  # e08
        ("2026-11-02", "image", 0, 1, -10),  # e06, at 00:00:00.000: a refund only
        ("2026-11-04", "image", 1, 0, 20),  # e11; e13 is exactly at to, out
    ]


def test_usage_keeps_the_order_of_the_groups(db: Engine) -> None:
    report = usage(db, NOV, ("tool", "day"))
    assert report.columns[:2] == ("tool", "day")
    assert report.rows == [
        ("chat", "2026-11-01", 1, 0, 30),
        ("chat", "2026-11-02", 1, 0, 50),
        ("image", "2026-11-01", 2, 0, 20),
        ("image", "2026-11-02", 0, 1, -10),
        ("image", "2026-11-04", 1, 0, 20),
    ]


def test_usage_by_account(db: Engine) -> None:
    report = usage(db, NOV, ("account",))
    assert report.columns == ("account_id", "charges", "refunds", "credits")
    assert report.rows == [
        ("alice", 2, 1, 10),  # e03 10 + e04 10 - e06 10; e10 is an expiry, not usage
        ("bob", 2, 0, 50),  # e05 30 + e11 20; e09 is an adjustment
        ("carol", 1, 0, 50),  # e08
    ]


def test_usage_by_credit_type_and_by_tool(db: Engine) -> None:
    assert usage(db, NOV, ("credit_type",)).rows == [
        ("credits", 4, 1, 60),  # 10 + 10 + 30 - 10 + 20
        ("tokens", 1, 0, 50),
    ]
    assert usage(db, NOV, ("tool",)).rows == [
        ("chat", 2, 0, 80),  # e05 30 + e08 50
        ("image", 3, 1, 30),  # 10 + 10 - 10 + 20
    ]


def test_usage_with_every_group_and_with_none(db: Engine) -> None:
    everything = usage(db, NOV, USAGE_GROUPS)
    assert everything.columns == (
        "day",
        "tool",
        "account_id",
        "credit_type",
        "charges",
        "refunds",
        "credits",
    )
    assert everything.rows[0] == ("2026-11-01", "chat", "bob", "credits", 1, 0, 30)
    assert len(everything.rows) == 5  # e03 and e04 share a row
    assert usage(db, NOV, ()).rows == [(5, 1, 110)]


def test_usage_range_includes_from_and_excludes_to(db: Engine) -> None:
    # e04 is at 2026-11-01T12:00Z and e05 at 23:59:59.999.
    assert usage(db, Range(at(0, 12), at(1) - 1), ("tool",)).rows == [("image", 1, 0, 10)]
    assert usage(db, Range(at(0, 12) + 1, at(1)), ("tool",)).rows == [("chat", 1, 0, 30)]
    assert usage(db, Range(at(2), at(3)), ("day",)).rows == []  # Nov 3: nothing


def test_top_consumers(db: Engine) -> None:
    report = top_consumers(db, NOV, 2)
    assert report.columns == ("account_id", "credit_type", "charges", "credits")
    # bob and carol both consumed 50: ties go by account id.
    assert report.rows == [("bob", "credits", 2, 50), ("carol", "tokens", 1, 50)]
    assert top_consumers(db, NOV, 10).rows[2:] == [("alice", "credits", 2, 10)]


@pytest.mark.parametrize("limit", [0, -1, TOP_LIMIT_MAX + 1, True])
def test_top_consumers_limit_out_of_bounds(db: Engine, limit: int) -> None:
    with pytest.raises(ReportError) as err:
        top_consumers(db, NOV, limit)
    assert err.value.field == "limit"
    assert str(err.value) == f"limit must be an integer from 1 to {TOP_LIMIT_MAX}"


# --- revenue -------------------------------------------------------------------------------


def test_revenue_by_day_in_each_currency(db: Engine) -> None:
    report = revenue(db, NOV, ("day",))
    assert report.name == "revenue"
    assert report.columns == (
        "day",
        "currency",
        "purchases",
        "credits",
        "gross_minor",
        "refunded_minor",
        "net_minor",
    )
    assert report.rows == [
        ("2026-11-01", "eur", 1, 50, 250, 0, 250),  # p3
        ("2026-11-01", "usd", 3, 400, 1900, 300, 1600),  # p1, p2 (300 refunded), p9 at from
        ("2026-11-02", "eur", 1, 100, 450, 450, 0),  # p7, disputed in full
        ("2026-11-02", "usd", 1, 1000, 2000, 0, 2000),  # p6; p4 pending, p5 a rollover
    ]  # p8 is exactly at to, out


def test_revenue_by_pack_and_by_plan(db: Engine) -> None:
    assert revenue(db, NOV, ("pack",)).rows == [
        ("large", "usd", 1, 200, 900, 300, 600),  # p2
        ("small", "eur", 1, 100, 450, 450, 0),  # p7
        ("small", "usd", 2, 200, 1000, 0, 1000),  # p1, p9
        (None, "eur", 1, 50, 250, 0, 250),  # p3, custom
        (None, "usd", 1, 1000, 2000, 0, 2000),  # p6, a plan
    ]
    assert revenue(db, NOV, ("plan",)).rows == [
        ("pro", "usd", 1, 1000, 2000, 0, 2000),  # p6
        (None, "eur", 2, 150, 700, 450, 250),  # p3, p7
        (None, "usd", 3, 400, 1900, 300, 1600),  # p1, p2, p9
    ]


def test_revenue_with_every_group_and_with_none(db: Engine) -> None:
    report = revenue(db, NOV, REVENUE_GROUPS)
    assert report.columns[:4] == ("day", "pack_id", "plan_id", "currency")
    assert report.rows[0] == ("2026-11-01", "large", None, "usd", 1, 200, 900, 300, 600)
    assert revenue(db, NOV, ()).rows == [
        ("eur", 2, 150, 700, 450, 250),
        ("usd", 4, 1400, 3900, 300, 3600),
    ]


# --- liability -----------------------------------------------------------------------------


def test_liability(db: Engine) -> None:
    report = liability(db, NOW)
    assert report.name == "liability"
    assert report.columns == (
        "credit_type",
        "paid",
        "promotional",
        "outstanding",
        "expiring_7d",
        "expiring_30d",
        "debt",
        "held",
    )
    assert report.rows == [
        # g1 600 + g3 100 paid, g2 300 promotional (expires in 3 days; g3 in 10); g4 is
        # spent, g7 expired; bob's debt, alice's held.
        ("credits", 700, 300, 1000, 300, 400, 40, 15),
        ("gems", 9, 0, 9, 0, 0, 0, 0),  # g9: grants, no wallet
        ("minutes", 0, 0, 0, 0, 0, 12, 0),  # dave's wallet: debt, no grant
        # g8 40 paid (31 days), g5 125 promotional expiring at exactly 7 days; g6 expires
        # at now.
        ("tokens", 40, 125, 165, 125, 125, 0, 5),
    ]


def test_liability_a_day_later(db: Engine) -> None:
    # g2 now expires in 2 days, g3 in 9; g5 in 6, g8 in 30 (the last ms of 30 days).
    rows = liability(db, NOW + DAY).rows
    assert rows[0] == ("credits", 700, 300, 1000, 300, 400, 40, 15)
    assert rows[3] == ("tokens", 40, 125, 165, 125, 165, 0, 5)


def test_liability_series_over_a_day_with_no_entries(db: Engine) -> None:
    report = liability_series(db, NOV)
    assert report.name == "liability_series"
    assert report.columns == ("day", "credit_type", "balance")
    assert report.rows == [
        ("2026-11-01", "credits", 1450),  # 1000 + 500 before; -10 -10 -30
        ("2026-11-01", "minutes", 0),
        ("2026-11-01", "tokens", 0),
        ("2026-11-02", "credits", 1465),  # +10 refund, +5 adjustment
        ("2026-11-02", "minutes", 0),
        ("2026-11-02", "tokens", 150),  # +200 - 50
        ("2026-11-03", "credits", 1465),  # no entries
        ("2026-11-03", "minutes", 0),
        ("2026-11-03", "tokens", 150),
        ("2026-11-04", "credits", 1345),  # -100 expiry, -20; e13 is on Nov 5
        ("2026-11-04", "minutes", 0),
        ("2026-11-04", "tokens", 125),  # -25 clawback
    ]


def test_liability_series_ends_at_to_and_may_start_inside_a_day(db: Engine) -> None:
    # Nov 4 closes at 02:00, the time of e11: e10 (01:00) is in, e11 and e12 are not.
    rows = liability_series(db, Range(at(0), at(3, 2))).rows
    assert rows[-3:] == [
        ("2026-11-04", "credits", 1365),
        ("2026-11-04", "minutes", 0),
        ("2026-11-04", "tokens", 150),
    ]
    # From noon on Nov 1: that day still ends with everything before Nov 2.
    assert liability_series(db, Range(at(0, 12), at(1, 12))).rows == [
        ("2026-11-01", "credits", 1450),
        ("2026-11-01", "minutes", 0),
        ("2026-11-01", "tokens", 0),
        ("2026-11-02", "credits", 1465),  # e06 at 00:00, e09 at 07:00
        ("2026-11-02", "minutes", 0),
        ("2026-11-02", "tokens", 150),  # e07, e08
    ]


def test_liability_series_before_any_entry(db: Engine) -> None:
    rows = liability_series(db, Range(at(-3), at(-2))).rows
    assert rows == [
        ("2026-10-29", "credits", 0),
        ("2026-10-29", "minutes", 0),
        ("2026-10-29", "tokens", 0),
    ]


# --- open holds ----------------------------------------------------------------------------


def test_open_holds_soonest_first(db: Engine) -> None:
    report = open_holds(db, NOW, 10)
    assert report.columns == ("id", "account_id", "credit_type", "tool", "amount", "expires_at_ms")
    # h3 expires at now, h4 is settled, h5 expired; h2 and h6 expire together: by id.
    assert report.rows == [
        ("h2", "carol", "tokens", "chat", 5, NOW + 10_000),
        ("h6", "dave", "credits", "chat", 4, NOW + 10_000),
        ("h1", "alice", "credits", "image", 15, NOW + 60_000),
    ]
    assert [row[0] for row in open_holds(db, NOW, 2).rows] == ["h2", "h6"]


@pytest.mark.parametrize("limit", [0, OPEN_HOLDS_LIMIT_MAX + 1])
def test_open_holds_limit_out_of_bounds(db: Engine, limit: int) -> None:
    with pytest.raises(ReportError) as err:
        open_holds(db, NOW, limit)
    assert err.value.field == "limit"


# --- output --------------------------------------------------------------------------------


def test_csv_has_the_columns_then_the_rows(db: Engine) -> None:
    assert usage(db, NOV, ("day", "tool")).to_csv() == (
        "day,tool,charges,refunds,credits\r\n"
        "2026-11-01,chat,1,0,30\r\n"
        "2026-11-01,image,2,0,20\r\n"
        "2026-11-02,chat,1,0,50\r\n"
        "2026-11-02,image,0,1,-10\r\n"
        "2026-11-04,image,1,0,20\r\n"
    )
    by_plan = revenue(db, NOV, ("plan",)).to_csv().split("\r\n")
    assert by_plan[2] == ",eur,2,150,700,450,250"  # no plan: an empty cell


def test_csv_quotes_what_needs_it() -> None:
    report = Report("usage", ("tool", "credits"), [('a,"b"', 1), (None, 2)])
    assert report.to_csv() == 'tool,credits\r\n"a,""b""",1\r\n,2\r\n'


def test_csv_text_a_spreadsheet_would_evaluate_is_made_inert() -> None:
    rows: list[tuple[int | str | None, ...]] = [("-1+2", -3), ("@acct", 0), ("=X", 1)]
    report = Report("usage", ("account_id", "credits"), rows)
    assert report.to_csv().split("\r\n")[1:4] == ["'-1+2,-3", "'@acct,0", "'=X,1"]


def test_as_dicts(db: Engine) -> None:
    assert usage(db, NOV, ("account",)).as_dicts()[0] == {
        "account_id": "alice",
        "charges": 2,
        "refunds": 1,
        "credits": 10,
    }


# --- parsing -------------------------------------------------------------------------------

NOON_21 = 1_795_262_400_000  # 2026-11-21T12:00:00Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-11-21T12:00:00Z", NOON_21),
        ("2026-11-21t12:00:00z", NOON_21),
        ("2026-11-21T14:00:00+02:00", NOON_21),
        ("2026-11-21T06:30:00-05:30", NOON_21),
        ("2026-11-21T12:00:00.5Z", NOON_21 + 500),
        ("2026-11-21T12:00:00.123999Z", NOON_21 + 123),  # below the ms: dropped
        ("2026-11-21", NOON_21 - 12 * 3_600_000),  # a date is 00:00 UTC
        ("2026-11-01", NOV1),
        ("2000-01-31", 946_684_800_000 + 30 * DAY),
    ],
)
def test_parse_range_reads_rfc3339_and_dates(text: str, ms: int) -> None:
    assert parse_range(text, None, ms + DAY).from_ms == ms
    assert parse_range(None, text, NOON_21).to_ms == ms


def test_parse_range_defaults() -> None:
    assert parse_range(None, None, NOON_21) == Range(NOON_21 - 30 * DAY, NOON_21)
    assert parse_range(None, "2026-11-21", NOON_21) == Range(at(20) - 30 * DAY, at(20))
    assert parse_range("2026-11-01", None, NOON_21) == Range(NOV1, NOON_21)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "",
        " 2026-11-01",
        "2026-11-01 ",
        "20261101",
        "2026-11-1",
        "2026-11-21T12:00:00",  # no offset: whose noon?
        "2026-11-21T12:00Z",
        "2026-11-21 12:00:00Z",
        "2026-11-21T12:00:00+0200",
        "\uff12\uff10\uff12\uff16-11-01",  # full-width digits: digits, but not ASCII ones
        "2026-13-01",
        "2026-02-29",  # not a leap year
        "2026-11-21T24:00:00Z",
        "2026-11-21T12:60:00Z",
        "2026-11-21T12:00:60Z",
        "2026-11-21T12:00:00+24:00",
        "2026-11-21T12:00:00+02:60",
    ],
)
def test_parse_range_refuses_what_is_not_a_time(text: str) -> None:
    with pytest.raises(ReportError) as err:
        parse_range(text, None, NOON_21)
    assert err.value.field == "from"
    assert repr(text) in str(err.value)
    with pytest.raises(ReportError) as err:
        parse_range(None, text, NOON_21)
    assert err.value.field == "to"


def test_parse_range_error_messages() -> None:
    with pytest.raises(ReportError) as err:
        parse_range("soon", None, NOON_21)
    assert str(err.value) == (
        "from 'soon' is not an RFC 3339 time (2026-11-21T12:00:00Z) or a date (2026-11-21)"
    )
    with pytest.raises(ReportError) as err:
        parse_range("2026-11-05", "2026-11-01", NOON_21)
    assert (err.value.field, str(err.value)) == ("from", "from must be before to")


@pytest.mark.parametrize(
    ("from_text", "to_text", "field"),
    [
        ("2026-11-05", "2026-11-01", "from"),
        ("2026-11-05", "2026-11-05", "from"),  # empty
        ("2026-11-22", None, "from"),  # after now
        ("2025-01-01", "2026-11-01", "from"),  # over 366 days
        ("2023-01-01", "2024-01-03", "from"),  # 367 days
        ("2025-01-01", None, "from"),  # to defaults to now: over 366 days
        ("1999-12-31", "2000-01-05", "from"),
        ("2000-01-01T00:30:00+01:00", "2000-01-05", "from"),  # 1999 in UTC
        (None, "2000-01-10", "to"),  # from would default to 1999-12-11
        ("9999-12-01", "9999-12-31T23:00:00-05:00", "to"),  # the year 10000 in UTC
        ("1970-01-01", None, "from"),
    ],
)
def test_parse_range_refuses_bad_ranges(
    from_text: str | None, to_text: str | None, field: str
) -> None:
    with pytest.raises(ReportError) as err:
        parse_range(from_text, to_text, NOON_21)
    assert err.value.field == field


def test_parse_range_allows_366_days_and_the_edges_of_the_years() -> None:
    assert parse_range("2023-01-01", "2024-01-02", NOON_21) == Range(
        1_672_531_200_000, 1_672_531_200_000 + 366 * DAY
    )
    assert parse_range("2000-01-01", None, 946_684_800_000 + DAY).from_ms == 946_684_800_000
    late = parse_range("9999-12-31", "9999-12-31T23:59:59.999Z", NOON_21)
    assert late.to_ms - late.from_ms == DAY - 1


def test_parse_group_by() -> None:
    assert parse_group_by(None, USAGE_GROUPS, ("day", "tool")) == ("day", "tool")
    assert parse_group_by("tool,day", USAGE_GROUPS, ("day",)) == ("tool", "day")
    assert parse_group_by(" account , credit_type", USAGE_GROUPS, ()) == (
        "account",
        "credit_type",
    )
    assert parse_group_by("pack", REVENUE_GROUPS, ("day",)) == ("pack",)


@pytest.mark.parametrize("text", ["", "week", "day,", "day,,tool", "day,day", "Day", "pack"])
def test_parse_group_by_refuses(text: str) -> None:
    with pytest.raises(ReportError) as err:
        parse_group_by(text, USAGE_GROUPS, ("day", "tool"))
    assert err.value.field == "group_by"


def test_parse_group_by_messages() -> None:
    with pytest.raises(ReportError) as err:
        parse_group_by("day,week", USAGE_GROUPS, ())
    assert str(err.value) == ("cannot group by 'week'; choose from day, tool, account, credit_type")
    with pytest.raises(ReportError) as err:
        parse_group_by("tool,tool", USAGE_GROUPS, ())
    assert str(err.value) == "group_by 'tool,tool' names a group twice"
