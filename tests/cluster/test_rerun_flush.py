"""tests/sync/test_flush.py, on the 3-master cluster of tests/cluster/conftest.py."""

import pytest

from tests.sync.conftest import flusher, meter, tool  # noqa: F401  (fixtures)
from tests.sync.test_flush import *  # noqa: F403

pytestmark = pytest.mark.standalone  # the cluster is the session's own
