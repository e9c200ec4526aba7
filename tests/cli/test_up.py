"""`creditmeter up` as `make run` runs it: embedded Redis, SQLite, catalog, API and worker
from nothing but a data directory; Ctrl-C stops everything (exit 0, no process left)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from meter.embedded import free_port

CLI = str(Path(sys.executable).parent / "creditmeter")
START_TIMEOUT_S = 180.0  # a cold start of four processes on a busy CI machine
STOP_TIMEOUT_S = 60.0  # children get CHILD_STOP_TIMEOUT_S (30 s) before SIGKILL
COMMAND_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
KEY_LABEL = "Admin API key"

pytestmark = pytest.mark.standalone


def _env(data_dir: Path) -> dict[str, str]:
    """No CREDITMETER_* from outside: embedded Redis, SQLite in the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITMETER_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(CREDITMETER_DATA_DIR=str(data_dir), COLUMNS="200")
    return env


class _Output:
    """Collects a process's stdout lines on a thread, so reading never blocks the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def key(self) -> str | None:
        """The line after the label: the admin key, alone on its line."""
        for i, line in enumerate(self.lines[:-1]):
            if line.startswith(KEY_LABEL):
                return self.lines[i + 1]
        return None

    def text(self) -> str:
        self._thread.join(5)
        return "\n".join(self.lines)


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every live process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), fields[0])
    return found


def _descendants(pid: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {p for p in pids if p in table and table[p][1] != "Z"}


def _wait_for_key(proc: subprocess.Popen[str], out: _Output) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        key = out.key()
        if key:
            return key
        if proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"up exited with {proc.returncode}:\n{out.text()}\n{stderr}")
        time.sleep(0.2)
    pytest.fail(f"no admin key within {START_TIMEOUT_S} s:\n{out.text()}")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


@pytest.mark.slow
@pytest.mark.timeout(START_TIMEOUT_S + STOP_TIMEOUT_S + 4 * COMMAND_TIMEOUT_S)
def test_up_serves_the_catalog_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = _env(tmp_path / ".creditmeter")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = tmp_path / ".creditmeter" / "logs"
    logs.mkdir(parents=True)
    for name in ("worker.log", "api.log"):  # kept: logs are appended
        (logs / name).write_text("a line of the run before\n")
    # Its own session, like a shell's foreground job: Ctrl-C is SIGINT to the whole group.
    proc = subprocess.Popen(
        [CLI, "up", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out = _Output(proc)
    try:
        key = _wait_for_key(proc, out)
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT_S, headers=auth) as http:
            assert http.get("/readyz").status_code == 200
            tools = http.get("/v1/tools")
            assert tools.status_code == 200, tools.text
            assert {"IMAGE_GEN", "VIDEO_GEN", "LLM_CHAT"} <= {
                t["name"] for t in tools.json()["data"]
            }

            # Another command meanwhile uses the running service's Redis, not a second one.
            changed = _cli(["tools", "set", "IMAGE_GEN", "--cost", "7"], env, tmp_path)
            assert changed.returncode == 0, changed.stderr
            request_id = "up-test-" + uuid.uuid4().hex
            charge = http.post(
                "/v1/charges",
                json={"account_id": "user_1", "tool": "IMAGE_GEN"},
                headers={"Idempotency-Key": uuid.uuid4().hex, "X-Request-Id": request_id},
            )
            assert charge.status_code == 201, charge.text
            assert (charge.json()["amount"], charge.json()["balance"]) == (7, 93)  # welcome 100

        second = _cli(["up", "--port", str(free_port())], env, tmp_path)
        assert second.returncode == 1
        assert "another creditmeter up" in second.stderr and second.stderr.count("\n") == 1

        assert (tmp_path / ".creditmeter" / "creditmeter.db").is_file()  # ./.creditmeter
        children = _descendants(proc.pid)
        assert len(children) >= 3, children  # redis, api, worker (and the worker's trigger)

        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(STOP_TIMEOUT_S) == 0, out.text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.text()
    assert "stopped" in text.splitlines()[-1], text
    assert "Traceback" not in text + (proc.stderr.read() if proc.stderr else "")
    deadline = time.monotonic() + 5
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children), _alive(children)
    for name in ("worker.log", "api.log"):
        text = (logs / name).read_text()
        assert text.startswith("a line of the run before\n--- creditmeter up started at "), name
    access = [ln for ln in (logs / "api.log").read_text().splitlines() if request_id in ln]
    assert len(access) == 1, access  # the charge's own line, through up's pipe
    assert '"path":"/v1/charges","status":201' in access[0]


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = _cli(["up", "--port", str(port)], _env(tmp_path / ".creditmeter"), tmp_path)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: port {port} on 127.0.0.1 is already in use: stop what holds it or pass --port\n"
    )
    assert r.stdout == ""


def test_a_missing_catalog_is_one_line_and_exit_1(tmp_path: Path) -> None:
    r = _cli(
        ["up", "--port", str(free_port()), "--catalog", "nope.toml"],
        _env(tmp_path / ".creditmeter"),
        tmp_path,
    )
    assert r.returncode == 1
    assert r.stderr == "error: nope.toml: catalog file not found\n"
