"""The one place meter errors become HTTP answers (api.errors.from_meter_error)."""

from __future__ import annotations

from api.errors import from_meter_error, invalid
from meter.errors import ClockSkew, GrantExists, InvalidArgument


def test_clock_skew_is_503_with_a_slug_and_retry_after_never_a_generic_error() -> None:
    problem = from_meter_error(ClockSkew(now_ms=7_200_000, server_ms=0))
    body = problem.body()
    assert (problem.status, body["type"]) == (503, "urn:creditmeter:problem:clock-skew")
    assert problem.headers["Retry-After"] == "60"
    assert "nothing was changed" in body["detail"]


def test_every_one_field_422_has_the_same_shape() -> None:
    """api.errors.invalid is the one builder: field, message and type, as pydantic's."""
    body = invalid("query.cursor", "not a cursor").body()
    assert (body["status"], body["detail"]) == (422, "not a cursor")
    assert body["errors"] == [{"field": "query.cursor", "message": "not a cursor", "type": "value"}]
    quote = invalid(
        "query.credits", "below 10", kind="below-minimum", slug="below-minimum", minimum=10
    )
    body = quote.body()
    assert body["type"].endswith(":below-minimum") and body["minimum"] == 10
    assert body["errors"][0]["type"] == "below-minimum"
    meter = from_meter_error(InvalidArgument("quantity", "must be 1..10**9")).body()
    assert meter["errors"] == [
        {"field": "quantity", "message": "quantity: must be 1..10**9", "type": "value"}
    ]


def test_a_grant_that_exists_is_409_grant_exists() -> None:
    problem = from_meter_error(GrantExists("grant"))
    assert (problem.status, problem.body()["type"]) == (409, "urn:creditmeter:problem:grant-exists")
