"""tests/meter/test_publish.py, on the 3-master cluster of tests/cluster/conftest.py."""

import pytest

from tests.meter.test_publish import *  # noqa: F403

pytestmark = pytest.mark.standalone  # the cluster is the session's own
