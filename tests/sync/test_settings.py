"""Settings come from CREDITMETER_* env vars."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sync.settings import Settings, get_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "QUEUE_REDIS_URL", "DATABASE_URL", "BUCKETS", "DATA_DIR"):
        monkeypatch.delenv(f"CREDITMETER_{name}", raising=False)
    s = Settings()
    assert s.redis_url is None
    assert s.effective_queue_redis_url() is None
    assert s.database_url == "sqlite:///.creditmeter/creditmeter.db"
    assert s.buckets == 16
    assert s.key_prefix == "cm"
    assert s.data_dir == Path(".creditmeter")


def test_prefixed_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITMETER_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("CREDITMETER_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("CREDITMETER_BUCKETS", "64")
    monkeypatch.setenv("CREDITMETER_KEY_PREFIX", "prod")
    monkeypatch.setenv("CREDITMETER_DATA_DIR", "/var/lib/cm")
    monkeypatch.setenv("CREDITMETER_STRIPE_SECRET_KEY", "sk_test_x")
    monkeypatch.setenv("CREDITMETER_STRIPE_WEBHOOK_SECRET", "whsec_x")
    monkeypatch.setenv("CREDITMETER_STRIPE_API_BASE", "http://127.0.0.1:12111")
    monkeypatch.setenv("CREDITMETER_SECRET_KEY", "s3cret")
    s = Settings()
    assert s.redis_url == "redis://example:6380/2"
    assert s.effective_queue_redis_url() == "redis://example:6380/2"
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.buckets == 64
    assert s.key_prefix == "prod"
    assert s.data_dir == Path("/var/lib/cm")
    assert s.stripe_secret_key == "sk_test_x"
    assert s.stripe_webhook_secret == "whsec_x"
    assert s.stripe_api_base == "http://127.0.0.1:12111"
    assert s.secret_key == "s3cret"


def test_queue_redis_url_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITMETER_REDIS_URL", "redis://a:6379/0")
    monkeypatch.setenv("CREDITMETER_QUEUE_REDIS_URL", "redis://b:6379/1")
    assert Settings().effective_queue_redis_url() == "redis://b:6379/1"


def test_unprefixed_env_vars_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDITMETER_BUCKETS", raising=False)
    monkeypatch.setenv("BUCKETS", "99")
    assert Settings().buckets == 16


@pytest.mark.parametrize("value", ["0", "16385", "-1"])
def test_buckets_out_of_range_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CREDITMETER_BUCKETS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_is_cached() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


def test_default_sqlite_file_follows_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDITMETER_DATABASE_URL", raising=False)
    monkeypatch.setenv("CREDITMETER_DATA_DIR", "/var/lib/cm")
    assert Settings().database_url == "sqlite:////var/lib/cm/creditmeter.db"
