"""Issue 14's newcomer paper cuts, as a newcomer meets them: the real `creditmeter` command
in a subprocess, its exit code and every line it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.service import LOG_BYTES_MAX, ChildLog, _LogPump
from meter.embedded import free_port
from sync.db import engine_for

CLI = str(Path(sys.executable).parent / "creditmeter")
COMMAND_TIMEOUT_S = 60.0


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """`creditmeter ARGS` with no CREDITMETER_* from outside but `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CREDITMETER_")}
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run(
        [CLI, *args],
        env={**base, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_api_with_redis_unreachable_prints_one_line_and_exits_1(
    sql_url: str, tmp_path: Path
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a free port: nothing listens there
    result = _run(
        ["api", "--port", str(free_port())],
        CREDITMETER_REDIS_URL=nobody,
        CREDITMETER_DATABASE_URL=sql_url,
        CREDITMETER_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 1
    line = _one_error_line(result)
    assert "cannot reach Redis at CREDITMETER_REDIS_URL" in line


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_postgres_url_without_a_driver_uses_psycopg(scheme: str, tmp_path: Path) -> None:
    """What Heroku, Render or psql print works as written: the engine is psycopg's, and a
    command reaches the server (here nobody listens: a connection error, not SQLAlchemy's
    "Can't load plugin")."""
    url = f"{scheme}://postgres@127.0.0.1:{free_port()}/creditmeter"
    engine = engine_for(url)
    assert (engine.dialect.name, engine.driver) == ("postgresql", "psycopg")
    result = _run(["migrate"], CREDITMETER_DATABASE_URL=url, CREDITMETER_DATA_DIR=str(tmp_path))
    assert result.returncode == 1
    line = _one_error_line(result)
    assert "plugin" not in line and "refused" in line, line


@pytest.mark.parametrize(
    "args",
    [
        ["tools", "list"],
        ["keys", "list"],
        ["report", "usage"],
        ["worker", "--burst"],
        ["reconcile"],
    ],
)
def test_a_sqlite_file_that_does_not_exist_is_refused_until_migrate(
    args: list[str], redis_url: str, tmp_path: Path
) -> None:
    """A mistyped path must not become a new empty database the user then wonders about."""
    typo = tmp_path / "creditmeter.bd"
    env = {
        "CREDITMETER_DATABASE_URL": f"sqlite:///{typo}",
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_KEY_PREFIX": f"papercut{os.getpid()}",
        "CREDITMETER_DATA_DIR": str(tmp_path),
    }
    refused = _run(args, **env)
    assert refused.returncode == 1
    assert _one_error_line(refused) == (
        f"error: no SQLite database at {typo}: run `creditmeter migrate` to create it "
        "(or correct CREDITMETER_DATABASE_URL)"
    )
    assert not typo.exists()
    migrated = _run(["migrate"], **env)
    assert migrated.returncode == 0, migrated.stderr
    assert typo.exists()
    after = _run(args, **env)
    assert after.returncode == 0, after.stderr


def test_help_needs_no_database(tmp_path: Path) -> None:
    typo = tmp_path / "creditmeter.bd"
    env = {"CREDITMETER_DATABASE_URL": f"sqlite:///{typo}", "CREDITMETER_DATA_DIR": str(tmp_path)}
    for args in (["keys", "create", "--help"], ["keys"], ["report", "usage", "--help"]):
        result = _run(args, **env)
        assert "Usage" in result.stdout and result.stderr == "", (args, result.stderr)
    assert not typo.exists()


def test_up_appends_to_a_log_and_moves_one_past_its_bound_aside(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "api.log"
    path.parent.mkdir()
    path.write_bytes(b"x" * (LOG_BYTES_MAX + 1))
    ChildLog(path, "T1").close()
    first = "--- creditmeter up started at T1 ---\n"
    assert path.read_text() == first
    assert (tmp_path / "logs" / "api.log.1").stat().st_size == LOG_BYTES_MAX + 1
    log = ChildLog(path, "T2")
    log.write(b"a request\n")
    log.close()
    assert path.read_text() == first + "--- creditmeter up started at T2 ---\na request\n"


def test_a_log_is_moved_aside_when_a_write_would_pass_its_bound_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "api.log"
    marker = "--- creditmeter up started at T ---\n"
    line = b"x" * 99 + b"\n"  # 100 bytes
    log = ChildLog(path, "T", bytes_max=len(marker) + 300)
    for _ in range(3):
        log.write(line)
    assert path.stat().st_size == len(marker) + 300  # exactly at the bound: not moved yet
    log.write(line)
    log.close()
    assert path.read_bytes() == line
    assert (tmp_path / "api.log.1").read_bytes() == marker.encode() + 3 * line


def test_a_childs_output_goes_through_the_pipe_into_its_bounded_log(tmp_path: Path) -> None:
    path = tmp_path / "worker.log"
    script = "for i in range(50): print(f'line {i:02d} ' + 'x' * 40)"  # 50 lines of 49 B
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert child.stdout is not None
    pump = _LogPump(child.stdout, ChildLog(path, "T", bytes_max=1000))
    assert child.wait(10) == 0
    tail = pump.lines()
    pump.close()
    assert tail[-1] == "line 49 " + "x" * 40 and len(tail) == 50
    assert path.read_text().endswith("line 49 " + "x" * 40 + "\n")
    assert path.stat().st_size <= 1000
    assert 1000 - 49 < (tmp_path / "worker.log.1").stat().st_size <= 1000


@pytest.mark.parametrize("command", [["tools", "list"], ["keys", "list"], ["report", "usage"]])
def test_a_database_behind_the_schema_is_refused_not_migrated_as_a_side_effect(
    command: list[str], tmp_path: Path
) -> None:
    """Only `migrate` and `up` change the schema: a read-only report must not migrate."""
    from sync.migrate import current, head, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0003")
    result = _run(command, CREDITMETER_DATABASE_URL=url, CREDITMETER_DATA_DIR=str(tmp_path))
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"database at revision 0003; this creditmeter needs {head(url)}" in line
    assert "run `creditmeter migrate`" in line
    assert current(url) == "0003"
    migrated = _run(["migrate"], CREDITMETER_DATABASE_URL=url, CREDITMETER_DATA_DIR=str(tmp_path))
    assert migrated.returncode == 0 and current(url) == head(url)
