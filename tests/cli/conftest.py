"""The `cli` fixture: a CliRunner whose commands use the test's Redis, SQL and key prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meter.keys import Keys
from sync.settings import get_settings


@pytest.fixture
def cli(
    redis_url: str, sql_url: str, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    for name, value in {
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_DATABASE_URL": sql_url,
        "CREDITMETER_KEY_PREFIX": keys.prefix,
        "CREDITMETER_BUCKETS": str(keys.buckets),
        "CREDITMETER_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()  # the commands read settings once per process
    yield CliRunner()
    get_settings.cache_clear()
