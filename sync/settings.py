"""Every deploy-time setting of the service: the meter's (meter/settings.py) plus SQL, the
queue Redis, Stripe and the secret, read from CREDITMETER_* env vars (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import model_validator

from meter.redis_conn import cluster_node_url
from meter.settings import MeterSettings

SQLITE_FILE_NAME = "creditmeter.db"


class Settings(MeterSettings):
    """One settings object for a service process; see README for the env var list."""

    # Redis for RQ queues; None = use redis_url.
    queue_redis_url: str | None = None
    # SQLAlchemy URL of the durable store (PostgreSQL in production); unset: a SQLite file
    # in data_dir, beside the embedded Redis data.
    database_url: str = ""
    # Stripe API secret key ("" = purchases disabled).
    stripe_secret_key: str = ""
    # Stripe webhook signing secret ("" = webhooks rejected).
    stripe_webhook_secret: str = ""
    # Stripe API base URL; tests point it at a local fake.
    stripe_api_base: str = "https://api.stripe.com"
    # Signs account tokens and admin sessions.
    secret_key: str = ""

    @model_validator(mode="after")
    def _sqlite_in_data_dir(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / SQLITE_FILE_NAME}"
        return self

    @model_validator(mode="after")
    def _queues_off_cluster(self) -> Settings:
        # RQ's pipelines do not run on a cluster client (they fail on the first enqueue).
        queue_url = self.effective_queue_redis_url()
        if queue_url and cluster_node_url(queue_url) is not None:
            raise ValueError(
                "RQ queues cannot live on a Redis Cluster: set CREDITMETER_QUEUE_REDIS_URL "
                "to a plain redis:// URL"
            )
        return self

    def effective_queue_redis_url(self) -> str | None:
        """The queue Redis URL, falling back to the balance Redis (REDIS_URL)."""
        return self.queue_redis_url or self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
