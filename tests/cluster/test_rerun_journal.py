"""tests/sync/test_journal.py, on the 3-master cluster of tests/cluster/conftest.py."""

import pytest

from tests.sync.conftest import flusher, meter, tool  # noqa: F401  (fixtures)
from tests.sync.test_journal import *  # noqa: F403

pytestmark = pytest.mark.standalone  # the cluster is the session's own
