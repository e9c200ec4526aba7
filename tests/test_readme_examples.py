"""The README's shell examples, run as written against a fresh `creditmeter up`.

Every ```console block of README.md is a transcript: `$ command` lines (a line ending in
`\\` goes on on the next) each followed by the output the README shows. The test starts
`creditmeter up` (embedded Redis, SQLite, the example catalog) in a temp directory laid out
like the repository (`.venv` and `examples/`), then feeds every command, in README order, to
one bash session there, so a variable one block sets is there in the next, and compares what
each printed with what the README shows. Ids, keys, tokens and times are normalised (the
same id must come back where the README repeats it); the API's port 8000 and the example
app's 8001 become free ports. `curl -i` answers compare the status line, the headers the
README shows and the body.

A shell example that cannot run here (it needs Stripe, a second service on port 8000, or a
drift made by hand) says so in an HTML comment `<!-- not run: why -->` right above it;
`test_every_shell_example_runs_or_says_why` fails on one that does neither, so no example
can slip out of the test. The "Selling credits with Stripe" section is edited elsewhere and
is left out of both tests.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from meter.embedded import free_port

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent  # not resolved: the venv, not the base Python
README_API_PORT = 8000
README_APP_PORT = 8001
OTHERS_SECTIONS: tuple[str, ...] = ()  # every section of the README is tested
NOT_RUN = re.compile(r"<!-- not run: [^>]+ -->")
RUN_LANG = "console"
SHELL_LANGS = ("console", "sh", "bash", "shell", "")
COMMAND_STARTS = ("$ ", "curl ", "creditmeter ", "CREDITMETER_", "uvicorn ", "stripe ")
START_TIMEOUT_S = 180.0  # a cold start of four processes on a busy CI machine
STEP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
# Reads of what the worker copies to SQL (reports) may run before its flush (~65 ms here):
# such a step is asked again until it matches or this passes.
EVENTUAL_S = 10.0
EVENTUAL_POLL_S = 0.5
SENTINEL = "__readme_step_done__"
KEY_LABEL = "Admin API key"

pytestmark = pytest.mark.standalone


# --- reading the README -------------------------------------------------------------------


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    section: str
    text: str
    marker: str  # the `<!-- not run: why -->` comment right above it, or ""


@dataclass
class Step:
    line: int
    command: str
    expected: list[str] = field(default_factory=list)


def blocks(markdown: str) -> Iterator[Block]:
    lines = markdown.splitlines()
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence is None:
            i += 1
            continue
        indent, lang = fence.groups()
        end = i + 1
        while not lines[end].startswith(indent + "```"):
            end += 1
        before = [ln for ln in lines[max(0, i - 3) : i] if ln.strip()]
        marked = NOT_RUN.search(before[-1]) if before else None
        body = [ln[len(indent) :] for ln in lines[i + 1 : end]]
        yield Block(i + 1, lang, section, "\n".join(body), marked.group(0) if marked else "")
        i = end + 1


def looks_like_shell(block: Block) -> bool:
    if block.lang not in SHELL_LANGS:
        return False
    return block.lang != "" or any(ln.startswith(COMMAND_STARTS) for ln in block.text.splitlines())


def steps(block: Block) -> list[Step]:
    found: list[Step] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            start = block.line + 1 + i
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + "\n" + lines[i].strip()
            found.append(Step(start, command.replace("\n", " ")))
        elif found:
            found[-1].expected.append(line)
        else:
            raise AssertionError(f"README.md:{block.line}: a console block starts with `$ `")
        i += 1
    return found


def readme_blocks() -> list[Block]:
    return [b for b in blocks(README.read_text()) if b.section not in OTHERS_SECTIONS]


def up_output_block() -> Block:
    """The block `## What make run shows` marks as the output of `creditmeter up`."""
    found = [b for b in readme_blocks() if "output of `creditmeter up`" in b.marker]
    assert len(found) == 1, "README.md: one block marked as the output of `creditmeter up`"
    return found[0]


# --- comparing ----------------------------------------------------------------------------

PATTERNS = [
    # A uuid alone or after a prefix (ep_, dlv_, evt_...): "_" is a word character, so no \b.
    (
        "id",
        re.compile(
            r"(?<![0-9a-f-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-f])"
        ),
    ),
    ("key-id", re.compile(r"\bkey_[0-9a-f]{16}\b")),
    ("key", re.compile(r"\bcm_live_[A-Za-z0-9]+…?")),  # whole or shortened (`up`'s banner)
    ("redis", re.compile(r"redis://127\.0\.0\.1:\d+/0")),  # the embedded server's free port
    ("run", re.compile(r"\b(?:grant|charge)-[0-9a-f]{8}\b")),  # `up`'s per-run Idempotency-Keys
    ("token", re.compile(r"\bcmt_[A-Za-z0-9._-]+")),
    ("webhook-secret", re.compile(r"\bwhsec_[A-Za-z0-9+/=]+")),  # a fresh one per endpoint
    ("time", re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")),
    ("day", re.compile(r"\b\d{4}-\d\d-\d\d\b")),
    ("request-id", re.compile(r'(?<="request_id":")[0-9a-f]{32}(?=")')),  # a fresh one
    ("ms", re.compile(r'(?<="duration_ms":)[0-9.]+')),
]


NUMBERED = ("id", "key-id")  # the others become one placeholder each


class Normaliser:
    """Replaces each id by `<id:N>`, N counted in order of first appearance, so two streams
    that repeat their ids in the same places normalise alike; keys, tokens, times alike."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, int]] = {name: {} for name in NUMBERED}

    def copy(self) -> Normaliser:
        twin = Normaliser()
        twin.seen = {name: dict(numbers) for name, numbers in self.seen.items()}
        return twin

    def _placeholder(self, name: str, value: str) -> str:
        if name not in NUMBERED:
            return f"<{name}>"
        numbers = self.seen[name]
        return f"<{name}:{numbers.setdefault(value, len(numbers) + 1)}>"

    def __call__(self, text: str) -> str:
        for name, pattern in PATTERNS:
            text = pattern.sub(lambda m, name=name: self._placeholder(name, m.group(0)), text)
        return text


def _trimmed(lines: list[str]) -> list[str]:
    lines = [ln.rstrip() for ln in lines]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _http_parts(lines: list[str]) -> tuple[str, dict[str, str], list[str]]:
    blank = lines.index("") if "" in lines else len(lines)
    headers = {}
    for ln in lines[1:blank]:
        name, _, value = ln.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, _trimmed(lines[blank + 1 :])


def mismatch(expected: list[str], actual: list[str]) -> str | None:
    """None when `actual` (normalised) shows what `expected` shows, else why not."""
    expected, actual = _trimmed(expected), _trimmed(actual)
    if expected and expected[0].startswith("HTTP/1.1 "):
        if not actual or not actual[0].startswith("HTTP/1.1 "):
            return "expected an HTTP status line (curl -i)"
        status, headers, body = _http_parts(expected)
        got_status, got_headers, got_body = _http_parts(actual)
        if status != got_status:
            return f"status {got_status!r}, README shows {status!r}"
        for name, value in headers.items():
            if got_headers.get(name) != value:
                return f"header {name}: {got_headers.get(name)!r}, README shows {value!r}"
        expected, actual = body, got_body
    if expected != actual:
        return "output differs"
    return None


# --- running ------------------------------------------------------------------------------


class Shell:
    """One bash session: commands in, their output (stdout and stderr) out."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.run("exec 2>&1")

    def run(self, command: str) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\nprintf '\\n{SENTINEL}\\n'\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line == "":
                raise AssertionError(f"bash exited running {command!r}: {lines}")
            if line.rstrip("\n") == SENTINEL:
                return lines
            lines.append(line.rstrip("\n"))
        raise AssertionError(f"{command!r} did not finish within {STEP_TIMEOUT_S} s")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(STEP_TIMEOUT_S)


def _read_only(command: str) -> bool:
    """A command that may be asked again: it reads what another process writes soon after
    (SQL filled by the worker; the access line written once the answer is sent)."""
    return command.startswith(("creditmeter report", "tail ")) or (
        command.startswith("curl") and " -X " not in command
    )


def _repo_like_dir(tmp_path: Path) -> Path:
    """What a clone looks like after `make install-dev`: `.venv` and `examples/` (copied, so
    `up` prints the catalog's path relative to the working directory, as in a clone)."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / ".venv").symlink_to(VENV)
    shutil.copytree(REPO / "examples", work / "examples")
    return work


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITMETER_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("VIRTUAL_ENV", None)
    # PATH as in a fresh terminal: the venv's bin only after `. .venv/bin/activate`.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != VENV / "bin"
    )
    env.update(COLUMNS="200")
    return env


def _start_up(work: Path, env: dict[str, str], port: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(VENV / "bin" / "creditmeter"), "up", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line == "":
            raise AssertionError("creditmeter up exited:\n" + "\n".join(lines))
        lines.append(line.rstrip("\n"))
        if line.startswith("creditmeter is up."):
            return proc, "\n".join(lines)
    raise AssertionError("creditmeter up did not start:\n" + "\n".join(lines))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_every_shell_example_runs_or_says_why() -> None:
    unmarked = [
        f"README.md:{b.line} ({b.section})"
        for b in readme_blocks()
        if looks_like_shell(b) and b.lang != RUN_LANG and not b.marker
    ]
    assert not unmarked, (
        "shell examples neither run (```console) nor marked `<!-- not run: why -->`: "
        + ", ".join(unmarked)
    )
    assert sum(len(steps(b)) for b in readme_blocks() if b.lang == RUN_LANG) >= 20


def test_the_comparison_catches_a_changed_figure_or_status() -> None:
    shown, real = Normaliser(), Normaliser()
    readme = [shown('{"id":"01a1ff00-328d-7000-a6bd-fed864e30000","balance":115}')]
    assert readme == ['{"id":"<id:1>","balance":115}']
    assert (
        mismatch(readme, [real('{"id":"01a23a8a-71db-7000-b023-f901389f0007","balance":115}')])
        is None
    )
    assert mismatch(readme, [real('{"id":"01a23a8a-71db-7000-b023-f901389f0007","balance":116}')])
    # the README repeats its first id; an answer with a second, new id is a difference
    again = [shown('{"id":"01a1ff00-328d-7000-a6bd-fed864e30000"}')]
    assert mismatch(again, [real('{"id":"01a23a8a-71db-7000-b023-f901389f0999"}')])
    assert mismatch(["HTTP/1.1 402 Payment Required", "", "{}"], ["HTTP/1.1 201 Created", "", "{}"])


def _run_step(
    shell: Shell, step: Step, ports: dict[int, int], shown: Normaliser, real: Normaliser
) -> str | None:
    """Runs one README command; None when it printed what the README shows, else a report.
    `real` numbers the ids met, so a step is normalised once, however often it is asked."""
    command = step.command
    for readme_port, port in ports.items():
        command = re.sub(rf"(:|--port ){readme_port}\b", rf"\g<1>{port}", command)
    want = [shown(ln) for ln in step.expected]
    deadline = time.monotonic() + (EVENTUAL_S if _read_only(command) else 0)
    while True:
        text = "\n".join(shell.run(command))
        for readme_port, port in ports.items():
            text = text.replace(f":{port}", f":{readme_port}")
        trial = real.copy()
        got = [trial(ln) for ln in text.split("\n")]
        why = mismatch(want, got)
        if why is None or time.monotonic() > deadline:
            break
        time.sleep(EVENTUAL_POLL_S)
    real.seen = trial.seen
    if why is None:
        return None
    return (
        f"README.md:{step.line}: $ {step.command}\n  {why}\n  README shows:\n    "
        + "\n    ".join(_trimmed(want))
        + "\n  it printed:\n    "
        + "\n    ".join(_trimmed(got))
    )


def _stop(up: subprocess.Popen[str]) -> str:
    """Ctrl-C, as at a terminal; what `up` printed from then on."""
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(STOP_TIMEOUT_S)
    assert up.stdout is not None
    return "^C\n" + up.stdout.read()


@pytest.mark.slow
@pytest.mark.timeout(START_TIMEOUT_S + STOP_TIMEOUT_S + 600)
def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    work = _repo_like_dir(tmp_path)
    env = _env(work)
    api_port, app_port = free_port(), free_port()
    ports = {README_API_PORT: api_port, README_APP_PORT: app_port}
    up, banner = _start_up(work, env, api_port)
    shell = Shell(work, env)
    shown, real = Normaliser(), Normaliser()
    failures: list[str] = []
    run = [s for b in readme_blocks() if b.lang == RUN_LANG for s in steps(b)]
    try:
        for step in run:
            why = _run_step(shell, step, ports, shown, real)
            if why is not None:
                failures.append(why)
    finally:
        shell.close()
        printed = banner + "\n" + _stop(up)

    block = up_output_block()
    up_shown, up_real = Normaliser(), Normaliser()
    if mismatch(
        [up_shown(ln) for ln in block.text.splitlines()],
        [up_real(ln.replace(f":{api_port}", ":8000")) for ln in printed.splitlines()],
    ):
        failures.append(f"README.md:{block.line}: creditmeter up printed:\n{printed}")
    assert not failures, f"{len(failures)} of {len(run) + 1} README examples differ:\n" + (
        "\n".join(failures)
    )
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while not _port_free(app_port) and time.monotonic() < deadline:
        time.sleep(EVENTUAL_POLL_S)
    assert _port_free(app_port), "the example app is still running"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{api_port}/healthz")
