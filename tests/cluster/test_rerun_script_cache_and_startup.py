"""tests/meter/test_script_cache_and_startup.py, on the cluster of tests/cluster/conftest.py."""

import pytest

from tests.meter.test_script_cache_and_startup import *  # noqa: F403

pytestmark = pytest.mark.standalone  # the cluster is the session's own
