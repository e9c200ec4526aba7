"""tests/meter/test_rate_limits.py, on the 3-master cluster of tests/cluster/conftest.py."""

import pytest

from tests.meter.test_rate_limits import *  # noqa: F403

pytestmark = pytest.mark.standalone  # the cluster is the session's own
