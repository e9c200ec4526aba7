"""tests/api's server environment for the cluster: the balances on the session's cluster,
RQ's queues on a plain Redis (sync/settings.py refuses them on a cluster)."""

from pathlib import Path

import pytest

from tests.api.server import server_env


@pytest.fixture(scope="module")
def api_env(
    redis_url: str, sql_url: str, api_prefix: str, api_data_dir: Path, queue_redis_url: str
) -> dict[str, str]:
    return server_env(
        redis_url, sql_url, api_prefix, api_data_dir, CREDITMETER_QUEUE_REDIS_URL=queue_redis_url
    )
