"""`creditmeter migrate`, `reconcile` and `deadletters` as an admin runs them: readable
output, exit code 0 when Redis and SQL agree, 1 while a difference remains, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis
from sqlalchemy import Engine

from meter import Meter
from meter.keys import Keys
from sync.flush import Flusher
from sync.loader import SqlLoader
from tests.sync.conftest import account
from tests.sync.invariants import dead_letter_newest

CLI = str(Path(sys.executable).parent / "creditmeter")


def _run(
    args: list[str], redis_url: str, sql_url: str, keys: Keys
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_DATABASE_URL": sql_url,
        "CREDITMETER_KEY_PREFIX": keys.prefix,
        "CREDITMETER_BUCKETS": str(keys.buckets),
        "COLUMNS": "200",
    }
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_reconcile_exit_code_follows_the_differences(
    redis_url: str, sql_url: str, client: redis.Redis, engine: Engine, keys: Keys
) -> None:
    assert _run(["migrate"], redis_url, sql_url, keys).stdout.startswith("database at revision")
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    a = account()
    g = meter.grant(a, "credits", 40, category="paid")
    Flusher(client, engine, keys).flush_all()
    agree = _run(["reconcile"], redis_url, sql_url, keys)
    assert agree.returncode == 0, agree.stderr
    assert "Redis and SQL agree on every wallet and grant." in agree.stdout
    client.hset(keys.wallet(a, "credits"), f"g:{g.grant_id}", "30|50|0|p")
    differ = _run(["reconcile"], redis_url, sql_url, keys)
    assert differ.returncode == 1
    assert a in differ.stdout and "balance" in differ.stdout and "30" in differ.stdout
    repaired = _run(["reconcile", "--repair"], redis_url, sql_url, keys)
    assert repaired.returncode == 0, repaired.stdout
    assert _run(["reconcile"], redis_url, sql_url, keys).returncode == 0


def test_an_unreachable_database_is_one_clear_line(redis_url: str, keys: Keys) -> None:
    r = _run(["migrate"], redis_url, "postgresql+psycopg://nobody@127.0.0.1:1/none", keys)
    assert r.returncode == 1
    assert r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_reconcile_names_dead_letters_and_deadletters_retry_writes_them(
    redis_url: str, sql_url: str, client: redis.Redis, engine: Engine, keys: Keys
) -> None:
    """A charge dead-lettered as the flush does it (row kept, entry gone from the journal)."""
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    a = account()
    meter.grant(a, "credits", 40, category="paid")
    Flusher(client, engine, keys).flush_all()
    adjusted = meter.adjust(a, "credits", -6, reason="support")
    journal = keys.journal(keys.bucket(a))
    dead_letter_newest(client, engine, journal, "sql: CheckViolation('refused for the test')")
    listed = _run(["deadletters", "list"], redis_url, sql_url, keys)
    assert listed.returncode == 0, listed.stderr
    assert adjusted.id in listed.stdout and "-6" in listed.stdout
    assert "1 dead letters" in listed.stdout
    differ = _run(["reconcile", "--repair"], redis_url, sql_url, keys)
    assert differ.returncode == 1
    assert f"{a}/credits: the difference is its dead letters (-6); not repaired" in differ.stdout
    assert meter.balance(a, ["credits"]).wallet("credits").balance == 34  # not handed back
    retried = _run(["deadletters", "retry", "--all"], redis_url, sql_url, keys)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "written to SQL, removed" in retried.stdout
    assert _run(["reconcile"], redis_url, sql_url, keys).returncode == 0
    assert "no dead letters" in _run(["deadletters", "list"], redis_url, sql_url, keys).stdout


def test_deadletters_retry_needs_an_id_or_all(redis_url: str, sql_url: str, keys: Keys) -> None:
    r = _run(["deadletters", "retry"], redis_url, sql_url, keys)
    assert r.returncode == 1 and r.stderr.strip() == "error: give one dead letter id or --all"
