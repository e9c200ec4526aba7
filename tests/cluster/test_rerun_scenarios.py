"""Every meter scenario (tests/meter/test_scenarios.py), through both clients, against the
3-master cluster of tests/cluster/conftest.py instead of one Redis."""

import pytest

from tests.meter.test_scenarios import *  # noqa: F403  (the scenarios and their fixture)

pytestmark = pytest.mark.standalone  # the cluster is the session's own
