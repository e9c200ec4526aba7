"""The meter library's own settings: where the balance Redis is and how keys are named, read
from CREDITMETER_* env vars (pydantic-settings). The service's SQL, queue, Stripe and secret
settings extend these in sync/settings.py."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from meter.bounds import BUCKETS_MAX


class MeterSettings(BaseSettings):
    """What a Meter needs to connect; see README for the env var list."""

    model_config = SettingsConfigDict(env_prefix="CREDITMETER_", extra="ignore")

    # Redis holding the hot balances; None = start the embedded server.
    redis_url: str | None = None
    # Number of hash-tag buckets accounts are spread over (1..16384).
    buckets: int = Field(default=16, ge=1, le=BUCKETS_MAX)
    # Prefix of every Redis key this service owns.
    key_prefix: str = "cm"
    # Directory for embedded Redis data (and, for the service, the SQLite file and logs).
    data_dir: Path = Path(".creditmeter")


@lru_cache(maxsize=1)
def get_meter_settings() -> MeterSettings:
    """The meter's settings, read from the environment once."""
    return MeterSettings()
