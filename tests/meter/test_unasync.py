"""Meter's public methods are generated from AsyncMeter's (meter/unasync.py): the generated
file is current, and every public method of both clients declares its real result type."""

from __future__ import annotations

import inspect
import typing

import pytest

from meter import AsyncHold, AsyncMeter, Hold, Meter, unasync
from meter.models import ChargeCheck, ChargeResult, SettleResult


def test_the_generated_sync_api_is_what_the_generator_writes_now() -> None:
    wanted = unasync.generate(unasync.SOURCE.read_text(encoding="utf-8"))
    assert unasync.TARGET.read_text(encoding="utf-8") == wanted, (
        "meter/api_sync.py is not current: run python -m meter.unasync"
    )


def test_the_check_fails_when_the_generated_file_differs(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "api_sync.py"
    stale.write_text(unasync.TARGET.read_text(encoding="utf-8") + "# edited by hand\n")
    monkeypatch.setattr(unasync, "TARGET", stale)
    assert unasync.main(["--check"]) == 1


def _public_methods(cls: type) -> list[str]:
    return sorted(
        {
            name
            for c in cls.__mro__[:-1]
            for name, value in vars(c).items()
            if not name.startswith("_") and inspect.isfunction(value)
        }
    )


@pytest.mark.parametrize("cls", [Meter, AsyncMeter, Hold, AsyncHold])
def test_every_public_method_declares_a_result_type_that_is_not_any(cls: type) -> None:
    names = _public_methods(cls)
    assert "charge" in names or "settle" in names
    for name in names:
        hints = typing.get_type_hints(getattr(cls, name))
        assert "return" in hints, f"{cls.__name__}.{name} declares no result"
        assert hints["return"] is not typing.Any, f"{cls.__name__}.{name} returns Any"


def test_both_clients_declare_the_same_results() -> None:
    # charge answers a ChargeCheck for dry_run=True (typed per call by its overloads)
    assert typing.get_type_hints(Meter.charge)["return"] == ChargeResult | ChargeCheck
    assert typing.get_type_hints(AsyncMeter.charge)["return"] == ChargeResult | ChargeCheck
    assert typing.get_type_hints(Hold.settle)["return"] is SettleResult
    assert typing.get_type_hints(AsyncHold.settle)["return"] is SettleResult
