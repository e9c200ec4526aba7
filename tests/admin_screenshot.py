"""Makes the README's dashboard screenshot (docs/admin-overview.png) from the example
catalog, never from test data: a throwaway embedded Redis and SQLite, `creditmeter migrate`
and `catalog apply examples/catalog.toml`, then 30 days of a small service simulated on the
meter with a driven clock (customers arriving, the welcome grant, pack purchases and Pro
subscribers, chat, image and video charges; a few holds open now), flushed to SQL; then
`creditmeter api`, a login with a fresh admin key, and a full-page screenshot at 1400 px.

    .venv/bin/python -m tests.admin_screenshot [OUT.png]   # default docs/admin-overview.png

The same seed draws the same service: run it again after a dashboard change."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Final

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine

from meter.client import Meter
from meter.embedded import EmbeddedRedis
from meter.errors import InsufficientCredits
from meter.keys import Keys
from meter.redis_conn import sync_client
from meter.times import now_ms
from sync.apikeys import create_key
from sync.db import engine_for
from sync.flush import Flusher
from sync.loader import SqlLoader
from sync.models import T_PURCHASES
from tests.api.server import creditmeter_bin, running_api, server_env
from tests.browser import CHARTS_SETTLED_JS, chromium, full_page_screenshot

REPO: Final = Path(__file__).resolve().parent.parent
CATALOG: Final = REPO / "examples" / "catalog.toml"
OUT_DEFAULT: Final = REPO / "docs" / "admin-overview.png"
SEED: Final = 14  # the same picture every run
DAYS: Final = 30  # the overview's default range
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
CUSTOMERS: Final = 60
HOLDS_OPEN: Final = 3  # generations running when the picture is taken
HOLD_TTL_S: Final = 900
WIDTH_PX: Final = 1400  # the README shows the desktop layout
WAIT_S: Final = 30
BUCKETS: Final = "4"  # server_env's CREDITMETER_BUCKETS
# The example catalog's packs (id, credits, price in cents) and the Pro plan's allocations.
PACKS: Final = (("credits-small", 50, 500), ("credits-large", 100, 900))
PRO_ALLOCATIONS: Final = {"credits": 1000, "video_seconds": 120}


def simulate(meter: Meter, engine: Engine, clock: list[int], start_ms: int) -> None:
    """Each customer arrives on some day (first touch: the welcome grant), may buy a pack or
    subscribe to Pro, then uses chat, images and video on most later days."""
    rnd = random.Random(SEED)
    customers = [
        (f"cus_{rnd.getrandbits(40):010x}", rnd.randrange(DAYS - 2), rnd.random())
        for _ in range(CUSTOMERS)
    ]
    purchases: list[tuple[str, str, int, int, int]] = []
    for day in range(DAYS):
        for who, joined, kind in customers:
            if day < joined or rnd.random() < 0.3:
                continue
            clock[0] = start_ms + day * DAY_MS + rnd.randrange(8, 22) * HOUR_MS
            if day == joined and kind > 0.55:
                if kind > 0.85:  # Pro: the plan's monthly allocations
                    for credit_type, amount in PRO_ALLOCATIONS.items():
                        meter.grant(who, credit_type, amount, category="paid", source="plan")
                else:
                    pack_id, credits, price = PACKS[int(kind * 10) % 2]
                    meter.grant(who, "credits", credits, category="paid", source="purchase")
                    purchases.append((who, pack_id, credits, price, clock[0]))
            uses = [("LLM_CHAT", rnd.randrange(1, 4), 1)] * rnd.randrange(2, 9)
            uses += [("IMAGE_GEN", 1, 1)] * rnd.randrange(0, 3)
            if kind > 0.85:
                uses += [("VIDEO_GEN", rnd.randrange(2, 9), 1)]
            for tool, quantity, _ in uses:
                clock[0] += rnd.randrange(1, 600_000)
                try:
                    meter.charge(who, tool, quantity, idempotency_key=uuid.uuid4().hex)
                except InsufficientCredits:
                    break  # out of credits for today, as real users are
    clock[0] = now_ms()
    opened = 0
    for who, _, kind in customers:  # generations running now
        tool = "VIDEO_GEN" if kind > 0.85 else "IMAGE_GEN"
        try:
            meter.hold(who, tool, quantity=2, ttl_s=HOLD_TTL_S)
        except InsufficientCredits:
            continue
        opened += 1
        if opened == HOLDS_OPEN:
            break
    with engine.begin() as conn:
        for who, pack_id, credits, price, at_ms in purchases:
            conn.execute(
                T_PURCHASES.insert(),
                {
                    "id": uuid.uuid4().hex,
                    "account_id": who,
                    "credit_type": "credits",
                    "credits": credits,
                    "pack_id": pack_id,
                    "amount_minor": price,
                    "currency": "usd",
                    "status": "paid",
                    "source": "pack",
                    "created_at_ms": at_ms,
                },
            )


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="cm-screenshot-") as tmp:
        work = Path(tmp)
        with EmbeddedRedis(work / "redis", appendonly=False) as server:
            redis_url = server.url
            sql_url = f"sqlite:///{work / 'creditmeter.db'}"
            prefix = "cm"
            env = server_env(redis_url, sql_url, prefix, work)
            for args in (["migrate"], ["catalog", "apply", str(CATALOG)]):
                subprocess.run([creditmeter_bin(), *args], env=env, check=True)
            keys = Keys(prefix=prefix, buckets=int(BUCKETS))
            clock = [0]
            client = sync_client(redis_url)
            engine = engine_for(sql_url)
            try:
                meter = Meter(
                    client,
                    keys=keys,
                    loader=SqlLoader(engine, keys, lambda: clock[0]),
                    clock_ms=lambda: clock[0],
                )
                start_ms = (now_ms() // DAY_MS - (DAYS - 1)) * DAY_MS
                simulate(meter, engine, clock, start_ms)
                Flusher(client, engine, keys).drain()
            finally:
                client.close()
            secret = env["CREDITMETER_SECRET_KEY"].encode()
            admin = create_key(engine, secret, name="readme", scope="admin").plaintext
            with running_api(env, log_path=work / "api.log") as url, chromium() as driver:
                driver.get(url + "/admin/login")
                driver.find_element(By.ID, "api_key").send_keys(admin)
                driver.find_element(By.ID, "login").click()
                WebDriverWait(driver, WAIT_S).until(
                    ec.presence_of_element_located((By.ID, "logout"))
                )
                WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(CHARTS_SETTLED_JS))
                full_page_screenshot(driver, out, WIDTH_PX)
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DEFAULT)
