#!/usr/bin/env bash
# The wheel as a user gets it: build it from a copy of the tree, install it (not editable) in
# a fresh venv in a temp dir, and from there, with the source tree off sys.path, run
# `creditmeter migrate`, a charge through meter.Meter + sync.loader.SqlLoader on an embedded
# Redis, and `creditmeter api` answering /healthz. Needs python3 and PyPI (or its mirror).
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
HEALTHZ_WAIT_S=90 # imports and the embedded Redis take seconds each on a busy 2-core host

WORK="$(mktemp -d "${TMPDIR:-/tmp}/creditmeter-wheel.XXXXXX")"
API_PID=""
cleanup() {
  if [ -n "$API_PID" ]; then
    kill "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf -- '--- wheel: %s (%ss)\n' "$*" "$SECONDS"; }

# A copy of the files git knows (tracked and not ignored): no stale build/ or egg-info of the
# tree can leak into the wheel, and the tree itself is left untouched.
step "copy the tree"
mkdir "$WORK/src" "$WORK/dist" "$WORK/run"
(cd "$SRC" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$WORK/src" -xf -

step "build"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/creditmeter-*.whl)"
echo "$WHEEL"

step "install into a fresh venv"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet "$WHEEL"

cd "$WORK/run"
export PATH="$WORK/venv/bin:$PATH"
export CREDITMETER_DATA_DIR="$WORK/run/data"
export CREDITMETER_DATABASE_URL="sqlite:///$WORK/run/creditmeter.db"
unset CREDITMETER_REDIS_URL CREDITMETER_QUEUE_REDIS_URL PYTHONPATH

step "creditmeter migrate"
creditmeter migrate

step "a charge through the installed meter"
python - "$SRC" <<'EOF'
import sys
from pathlib import Path

import meter
from meter import Keys, Meter
from meter.embedded import EmbeddedRedis
from sync.db import engine_for
from sync.loader import SqlLoader
from sync.migrate import current

source_tree = Path(sys.argv[1])
for module in (meter, sys.modules["sync"]):
    where = Path(module.__file__).resolve()
    assert source_tree not in where.parents, f"{module.__name__} imported from the tree: {where}"
    assert "site-packages" in where.parts, where

url = f"sqlite:///{Path.cwd() / 'creditmeter.db'}"
assert current(url) is not None, "creditmeter migrate left no revision"
keys = Keys(prefix="wheelcheck")
with EmbeddedRedis(Path.cwd() / "charge-redis", appendonly=False) as server:
    m = Meter.from_url(server.url, keys=keys, loader=SqlLoader(engine_for(url), keys))
    m.set_tool("WHEEL_CHECK", 3)
    before = m.grant("acct_wheel", "credits", 10).balance
    result = m.charge("acct_wheel", "WHEEL_CHECK")
    assert result.balance == before - 3, (before, result)
    print(f"charged 3 credits from {meter.__file__}: balance {before} -> {result.balance}")
EOF

step "creditmeter api + /healthz"
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
creditmeter api --port "$PORT" >"$WORK/api.log" 2>&1 &
API_PID=$!
if ! python - "$PORT" "$HEALTHZ_WAIT_S" "$API_PID" <<'EOF'; then
import sys
import time
import urllib.request
from pathlib import Path

port, wait_s, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])


def api_exited() -> bool:
    """Gone, or a zombie its parent (this script's shell) has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


deadline = time.monotonic() + wait_s
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
            assert reply.status == 200, reply.status
            print(f"/healthz {reply.status} {reply.read().decode()}")
            sys.exit(0)
    except OSError:
        if api_exited():
            sys.exit("creditmeter api exited before /healthz answered")
        time.sleep(0.5)
sys.exit(f"/healthz did not answer 200 within {wait_s:.0f} s")
EOF
  cat "$WORK/api.log"
  exit 1
fi
kill "$API_PID"
wait "$API_PID" || true
API_PID=""

step "ok"
