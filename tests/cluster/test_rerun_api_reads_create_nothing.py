"""tests/api/test_reads_create_nothing.py against a `creditmeter api` on the cluster."""

import pytest

from tests.api.conftest import *  # noqa: F403  (a real `creditmeter api` process per module)
from tests.api.test_reads_create_nothing import *  # noqa: F403
from tests.cluster.api_env import api_env  # noqa: F401  (queues off the cluster)

pytestmark = pytest.mark.standalone  # the cluster is the session's own
