"""The HTTP API on the 3-master cluster: a real `creditmeter api` process charging, and its
SSE balance streams fed by pub/sub (a PUBLISH from a script on any master reaches them).

Not rerun here: the stream tests that count subscribers with PUBSUB NUMSUB, which on a
cluster counts only the node asked, not the one the hub subscribed on."""

import pytest

from tests.api.conftest import *  # noqa: F403  (a real `creditmeter api` process per module)
from tests.api.test_charge_round_trips import *  # noqa: F403
from tests.api.test_sse_stream import (  # noqa: F401  (collected here, on the cluster)
    account,
    server,
    test_a_charge_and_a_hold_arrive_within_100_ms_with_the_new_numbers,
    test_a_malformed_account_id_is_refused_before_streaming,
    test_an_idle_stream_pings_once_per_interval,
    test_only_the_accounts_own_events_are_streamed,
    test_streams_of_an_account_share_a_snapshot_read_begun_after_they_asked,
    test_the_sixth_stream_of_an_account_is_429,
)
from tests.cluster.api_env import api_env  # noqa: F401  (queues off the cluster)

pytestmark = pytest.mark.standalone  # the cluster is the session's own
