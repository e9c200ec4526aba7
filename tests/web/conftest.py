"""The frontend kit's browser test runs standalone: its own embedded Redis and SQLite file, so
the example catalog it applies (packs, prices, the pro plan) never meets other modules' data;
the API, its keys and the loopback Stripe come from tests/api/conftest.py's fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meter.embedded import EmbeddedRedis
from sync.migrate import upgrade
from tests import stripe_fake as sf
from tests.api import conftest as api_fixtures
from tests.api.server import server_env

# tests/api's fixtures, used here as they are (pytest finds fixtures by these names).
admin_key = api_fixtures.admin_key
api_data_dir = api_fixtures.api_data_dir
api_engine = api_fixtures.api_engine
api_prefix = api_fixtures.api_prefix
api_url = api_fixtures.api_url
fake_stripe = api_fixtures.fake_stripe
make_key = api_fixtures.make_key
meter_key = api_fixtures.meter_key


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("web-redis"), appendonly=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sql_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('web-sql') / 'creditmeter.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def api_env(
    redis_url: str,
    sql_url: str,
    api_prefix: str,
    api_data_dir: Path,
    fake_stripe: sf.FakeStripe,
) -> dict[str, str]:
    """The API sells through the loopback fake Stripe: the page's checkout reaches it."""
    return server_env(
        redis_url,
        sql_url,
        api_prefix,
        api_data_dir,
        CREDITMETER_STRIPE_SECRET_KEY="sk_test_fake",
        CREDITMETER_STRIPE_WEBHOOK_SECRET=api_fixtures.STRIPE_WEBHOOK_SECRET,
        CREDITMETER_STRIPE_API_BASE=fake_stripe.url,
    )
