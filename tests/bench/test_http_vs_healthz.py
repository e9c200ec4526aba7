"""bench.http_vs_healthz: charge and /healthz of one server in one run, Redis commands per
charge read from commandstats and from MONITOR (scripts' own calls left out)."""

from __future__ import annotations

import pytest

from bench import http
from bench import http_vs_healthz as hv

MONITOR_TEXT = "\n".join(
    [
        "OK",
        '1700000000.000001 [0 127.0.0.1:5001] "SET" "p:http-idem:{k1}" "fp" "NX" "GET"',
        '1700000000.000002 [0 127.0.0.1:5002] "EVALSHA" "abc" "6" "p:{1}:tools"',
        '1700000000.000003 [0 lua] "HGETALL" "p:{1}:w:credits:a"',
        '1700000000.000004 [0 lua] "SET" "p:{1}:i:a:k1" "x"',
        '1700000000.000005 [0 127.0.0.1:5001] "SET" "p:http-idem:{k2}" "fp" "NX" "GET"',
    ]
)


def test_monitor_counts_only_what_clients_sent() -> None:
    assert hv.sent_commands(MONITOR_TEXT) == {"set": 2, "evalsha": 1}


@pytest.mark.timeout(600)  # a server starts and imports for seconds on a busy machine
def test_one_run_measures_both_paths_on_one_server(redis_url: str, key_prefix: str) -> None:
    c = hv.compare(
        redis_url,
        1,
        workers=1,
        connections=4,
        accounts=4,
        warmup_s=1,
        prefix=key_prefix,
        say=lambda text: None,
    )
    assert c.healthz.rate > 0 and c.charge.rate > 0 and c.ratio > 0
    assert not c.charge.errors and not c.healthz.errors
    # Requests in flight when wrk stops still charge: at most one per connection.
    assert 0 <= c.charges - c.charge.ok <= 4
    assert c.cpu_us[http.CHARGE_PATH] > 0 and c.cpu_us[http.HEALTHZ_PATH] > 0
    per_charge = c.per_charge(c.sent, c.sent_charges)
    assert per_charge["set"] == pytest.approx(1.0, abs=0.05)  # one claim per request
    # At most one script call per charge; the server's own upkeep (sweeps, on a shared Redis
    # other clients too) adds a few that MONITOR cannot tell apart (CI saw 1.05).
    assert 0 < per_charge["evalsha"] <= 1.1
    assert "= " in c.lines()[0] and "x" in c.lines()[0]
