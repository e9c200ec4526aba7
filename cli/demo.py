"""The hot path end to end on the embedded Redis: price tools, grant, charge, hold, refund.

This is what `creditmeter up` runs until the durable side (SQL, workers, API) is in place;
it uses the Redis-only NewAccountLoader, which opens unknown wallets empty.
"""

from __future__ import annotations

import uuid

from rich.console import Console
from rich.table import Table

from meter import InsufficientCredits, Meter, NewAccountLoader, Tool
from meter.connect import checked_redis_url, keys_from
from meter.settings import Settings

DEMO_TOOLS = [
    Tool("IMAGE_GEN", cost=10, credit_type="credits"),
    Tool("LLM_CHAT", cost=1, credit_type="credits"),
    Tool("VIDEO_GEN", cost=2, credit_type="video_seconds"),
]


def run(settings: Settings, console: Console) -> None:
    url = checked_redis_url(settings)
    console.print(f"Redis: {url} (data in {settings.data_dir / 'redis'})")
    meter = Meter.from_url(url, keys=keys_from(settings), loader=NewAccountLoader(DEMO_TOOLS))
    meter.set_tools(DEMO_TOOLS)
    account = f"demo_{uuid.uuid4().hex[:8]}"
    steps = Table("step", "result", "balance", title=f"account {account}")

    g = meter.grant(account, "credits", 100, category="paid", source="purchase")
    steps.add_row("grant 100 paid credits", g.id, str(g.balance))
    promo = meter.grant(account, "credits", 20, category="promotional", priority=10)
    steps.add_row("grant 20 promotional (priority 10, burns first)", promo.id, str(promo.balance))
    c = meter.charge(account, "IMAGE_GEN", idempotency_key=f"{account}-req-1")
    steps.add_row("charge IMAGE_GEN (cost 10)", c.id, str(c.balance))
    again = meter.charge(account, "IMAGE_GEN", idempotency_key=f"{account}-req-1")
    steps.add_row(
        "retry with the same idempotency key", f"replayed={again.replayed}", str(again.balance)
    )
    with meter.hold(account, "LLM_CHAT", amount=50) as h:
        steps.add_row("hold 50 for LLM_CHAT", h.id, f"available {h.result.available}")
        s = h.settle(37)
        steps.add_row("settle the hold at 37", f"released {s.released}", str(s.balance))
    r = meter.refund(c.id, 4, reason="demo partial refund")
    steps.add_row("refund 4 of the IMAGE_GEN charge", r.id, str(r.balance))
    try:
        meter.charge(account, "IMAGE_GEN", quantity=100)
    except InsufficientCredits as exc:
        steps.add_row("charge IMAGE_GEN x100", f"402: {exc}", str(exc.balance))
    console.print(steps)

    wallets = Table("credit type", "balance", "available", "held", "grants", title="balance")
    for w in meter.balance(account).wallets:
        grants = ", ".join(f"{gr.category} {gr.remaining}" for gr in w.grants) or "-"
        wallets.add_row(w.credit_type, str(w.balance), str(w.available), str(w.held), grants)
    console.print(wallets)
    journal = meter.keys.journal(meter.keys.bucket(account))
    console.print(f"journal {journal}: {meter.redis.xlen(journal)} entries")
