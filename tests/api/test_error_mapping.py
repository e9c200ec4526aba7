"""The one place meter errors become HTTP answers (api.errors.from_meter_error)."""

from __future__ import annotations

from api.errors import from_meter_error
from meter.errors import ClockSkew


def test_clock_skew_is_503_with_a_slug_and_retry_after_never_a_generic_error() -> None:
    problem = from_meter_error(ClockSkew(now_ms=7_200_000, server_ms=0))
    body = problem.body()
    assert (problem.status, body["type"]) == (503, "urn:creditmeter:problem:clock-skew")
    assert problem.headers["Retry-After"] == "60"
    assert "nothing was changed" in body["detail"]
