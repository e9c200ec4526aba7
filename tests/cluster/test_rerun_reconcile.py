"""Reconcile (drain, compare, repair) with the meter on the cluster."""

import pytest

from tests.sync.conftest import flusher, meter, tool  # noqa: F401  (fixtures)
from tests.sync.test_reconcile import *  # noqa: F403

pytestmark = pytest.mark.standalone  # the cluster is the session's own
