"""The results table: each figure the median of the runs with min-max; ratios per run.

A run is a dict row -> figure ({"value", "unit", "note", ...} or {"skipped": reason}).
Ratios are computed inside each run (numerator and denominator measured minutes apart on
the same machine state), then summarized like any figure.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

Figure = dict[str, Any]
Run = dict[str, Figure]

ROWS: list[tuple[str, str]] = [
    ("ceiling", "1. ceiling: redis-benchmark EVALSHA charge.lua, 1 charge per call"),
    (
        "lean_ceiling",
        "1. lean ceiling: redis-benchmark EVALSHA of HGET, 2x HINCRBY, XADD, SET EX, 1 charge/call",
    ),
    ("async_spread", "2. AsyncMeter, spread accounts"),
    ("async_hot", "2. AsyncMeter, one hot account"),
    ("async_64x512", "2. AsyncMeter, 64 accounts, 512 in flight"),
    ("sync_throughput", "2. Meter (sync), sequential"),
    ("sync_p50", "2. Meter (sync), one charge, p50 latency"),
    ("sync_p99", "2. Meter (sync), one charge, p99 latency"),
    ("sql_hot", "3. SQL txn per charge, hot account"),
    ("sql_spread", "3. SQL txn per charge, spread accounts"),
    ("sql_hot_nowait", "3. SQL txn per charge, hot account, no commit wait"),
    ("http_healthz", "4. HTTP: GET /healthz (creditmeter api), wrk"),
    ("http_healthz_p50", "4. HTTP: GET /healthz, p50 latency at that rate"),
    ("http_healthz_p99", "4. HTTP: GET /healthz, p99 latency at that rate"),
    ("http_charge", "4. HTTP: POST /v1/charges (the same creditmeter api), wrk"),
    ("http_charge_p50", "4. HTTP: POST /v1/charges, p50 latency at that rate"),
    ("http_charge_p99", "4. HTTP: POST /v1/charges, p99 latency at that rate"),
    ("memory_wallet", "Redis memory: wallet with one grant"),
    ("memory_charge_record", "Redis memory per charge: its record (replays and refunds)"),
    ("memory_charge_keyed", "Redis memory per charge with an idempotency key: record + pointer"),
    ("memory_journal_entry", "Redis memory per charge: journal entry"),
    ("memory_per_charge", "Redis memory per charge kept 25 h: record + journal entry"),
    ("flush_rate", "5. flush: journal -> SQL, Flusher.flush_all()"),
    ("copy_rate", "5. raw COPY of the same ledger rows (the flush's ceiling)"),
    ("flush_lag_p50", "5. flush lag p50: journaled -> committed in SQL, worker under load"),
    ("flush_lag_p99", "5. flush lag p99: journaled -> committed in SQL, worker under load"),
    ("flush_lag_achieved", "5. flush lag: charges/s the load achieved while measured"),
    ("drain_after_outage_s", "5. drain after an outage: backlog flushed by a fresh worker"),
    ("cluster_1_node", "Redis Cluster: AsyncMeter on 1 Redis"),
    ("cluster_3_nodes", "Redis Cluster: AsyncMeter on a 3-master cluster"),
    ("cluster_1_node_cpu", "Redis Cluster: Redis CPU per charge, 1 Redis"),
    ("cluster_3_nodes_cpu", "Redis Cluster: Redis CPU per charge, 3 masters (sum)"),
]

RATIOS: list[tuple[str, str, str]] = [
    ("async_64x512 / lean_ceiling", "async_64x512", "lean_ceiling"),
    ("async_hot / ceiling", "async_hot", "ceiling"),
    ("async_spread / ceiling", "async_spread", "ceiling"),
    ("async_hot / sql_hot", "async_hot", "sql_hot"),
    ("async_spread / sql_spread", "async_spread", "sql_spread"),
    ("async_hot / sql_hot_nowait", "async_hot", "sql_hot_nowait"),
    ("flush_rate / copy_rate", "flush_rate", "copy_rate"),
    ("http_charge / http_healthz", "http_charge", "http_healthz"),
    ("cluster_3_nodes / cluster_1_node", "cluster_3_nodes", "cluster_1_node"),
    ("cluster_3_nodes_cpu / cluster_1_node_cpu", "cluster_3_nodes_cpu", "cluster_1_node_cpu"),
]

# (what, row or ratio name, ">=" or "<=" or ROW_ONLY, limit): issue 15's table, in its order
ROW_ONLY = "row"  # a figure the issue asks to see, with no limit
ISSUE_TARGETS: list[tuple[str, str, str, float]] = [
    (
        "AsyncMeter 64 accounts x 512 in flight >= 0.6x the lean EVALSHA ceiling",
        "async_64x512 / lean_ceiling",
        ">=",
        0.6,
    ),
    (
        "moonshot: the same >= 1.2x (batching beats one script call per charge)",
        "async_64x512 / lean_ceiling",
        ">=",
        1.2,
    ),
    ("AsyncMeter, spread accounts >= 60,000 charges/s", "async_spread", ">=", 60_000),
    ("AsyncMeter, one hot account (the issue's figure beside spread)", "async_hot", ROW_ONLY, 0),
    ("sync Meter, one charge, p99 <= 0.5 ms unloaded", "sync_p99", "<=", 0.5),
    (
        "flush journal -> PostgreSQL >= 0.7x raw COPY of the same rows",
        "flush_rate / copy_rate",
        ">=",
        0.7,
    ),
    ("flush lag p99 <= 1,000 ms under 20,000 charges/s offered", "flush_lag_p99", "<=", 1000),
    ("... at >= 20,000 charges/s achieved", "flush_lag_achieved", ">=", 20_000),
    ("Redis memory per charge kept 25 h <= 350 bytes", "memory_per_charge", "<=", 350),
    ("HTTP POST /v1/charges >= 0.5x GET /healthz (now)", "http_charge / http_healthz", ">=", 0.5),
    (
        "HTTP POST /v1/charges >= 0.8x GET /healthz (the goal)",
        "http_charge / http_healthz",
        ">=",
        0.8,
    ),
    ("HTTP POST /v1/charges p99 <= 10 ms at that rate", "http_charge_p99", "<=", 10),
    (
        "Redis Cluster: AsyncMeter charges/s, 3 masters / 1 Redis",
        "cluster_3_nodes / cluster_1_node",
        ROW_ONLY,
        0,
    ),
    (
        "Redis Cluster: Redis CPU us/charge, 3 masters / 1 Redis",
        "cluster_3_nodes_cpu / cluster_1_node_cpu",
        ROW_ONLY,
        0,
    ),
]
# Earlier issues' targets that issue 15 does not restate (nor contradict).
OTHER_TARGETS: list[tuple[str, str, str, float]] = [
    ("AsyncMeter (hot) >= 1.2x the charge.lua EVALSHA ceiling", "async_hot / ceiling", ">=", 1.2),
    (
        "AsyncMeter (spread) >= 1.2x the charge.lua EVALSHA ceiling",
        "async_spread / ceiling",
        ">=",
        1.2,
    ),
    ("AsyncMeter >= 50x SQL txn per charge, hot account", "async_hot / sql_hot", ">=", 50),
    ("Redis memory per wallet with one grant <= 250 bytes", "memory_wallet", "<=", 250),
]
TARGETS = ISSUE_TARGETS + OTHER_TARGETS


def summarize(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def ratios_of(run: Run) -> dict[str, float]:
    out = {}
    for name, num, den in RATIOS:
        a, b = run.get(num, {}).get("value"), run.get(den, {}).get("value")
        if a is not None and b:
            out[name] = a / b
    return out


def build(runs: list[Run], meta: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for key, label in ROWS:
        figs = [r[key] for r in runs if key in r]
        if not figs:
            continue
        values = [f["value"] for f in figs if f.get("value") is not None]
        last = next((f for f in reversed(figs) if "value" in f), figs[-1])
        rows[key] = {
            "label": label,
            "unit": last.get("unit", ""),
            "summary": summarize(values),
            "note": last.get("note", ""),
            "skipped": next((f["skipped"] for f in figs if "skipped" in f), None),
            "verified": all(f.get("verified", True) for f in figs if "value" in f),
            "extra": _extra(figs),
        }
    per_run = [ratios_of(r) for r in runs]
    ratios = {name: summarize([p[name] for p in per_run if name in p]) for name, _, _ in RATIOS}
    targets = [
        {**_target(what, name, op, goal, rows, ratios), "group": group}
        for group, table in (("issue 15", ISSUE_TARGETS), ("earlier", OTHER_TARGETS))
        for what, name, op, goal in table
    ]
    return {
        "meta": meta,
        "rows": rows,
        "ratios": ratios,
        "ratios_per_run": per_run,
        "targets": targets,
        "runs": runs,
    }


def _extra(figs: list[Figure]) -> str:
    """CPU shares and batch sizes of the client and HTTP runs, as medians."""
    parts = []
    for field, fmt in (
        ("server_cpu", "API server CPU {:.0%}"),
        ("server_cpu_us_per_request", "{:,.0f} us server CPU/request"),
        ("redis_cpu", "redis-server CPU {:.0%}"),
        ("client_cpu", "client CPU {:.0%}"),
        ("charges_per_script_call", "{:.0f} charges/EVALSHA"),
    ):
        vals = [f[field] for f in figs if f.get(field) is not None]
        if vals:
            parts.append(fmt.format(statistics.median(vals)))
    errors: dict[str, int] = {}
    for f in figs:
        for k, v in (f.get("errors") or {}).items():
            errors[k] = errors.get(k, 0) + v
    if errors:
        parts.append("failed (not counted): " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    return "; ".join(parts)


def _target(
    what: str, name: str, op: str, goal: float, rows: dict[str, Any], ratios: dict[str, Any]
) -> dict[str, Any]:
    summary = ratios.get(name) if name in ratios else (rows.get(name) or {}).get("summary")
    if not summary:
        skips = [(rows.get(key) or {}).get("skipped") for key in _parts(name)]
        reason = next((skip for skip in skips if skip), "not measured")
        return {"target": what, "status": reason, "value": None}
    v = summary["median"]
    out = {"target": what, "value": v, "min": summary["min"], "max": summary["max"]}
    out["from"] = _from(name, rows)
    if op == ROW_ONLY:
        return {**out, "status": "row", "detail": "a row (no limit)"}
    ok = v >= goal if op == ">=" else v <= goal
    if ok:
        gap = "met"
    elif op == ">=":
        gap = f"MISSED: {v / goal:.1%} of target ({goal / v:.1f}x short)" if v else "MISSED"
    else:
        gap = f"MISSED: {v / goal - 1:.0%} over"
    return {
        **out,
        "status": "met" if ok else "missed",
        "goal": goal,
        "op": op,
        "vs_limit": v / goal,
        "detail": gap,
    }


def _parts(name: str) -> tuple[str, ...]:
    """The rows a target's figure comes from: a ratio's two, else the row itself."""
    return next(((num, den) for ratio, num, den in RATIOS if ratio == name), (name,))


def _from(name: str, rows: dict[str, Any]) -> str:
    """What a target's figure is made of: "num / den unit" of a ratio (medians), else the unit."""
    parts = _parts(name)
    medians = []
    for key in parts:
        summary = (rows.get(key) or {}).get("summary")
        medians.append(_short(summary["median"]) if summary else "n/a")
    unit: str = (rows.get(parts[0]) or {}).get("unit", "")
    return " / ".join(medians) + " " + unit


def _short(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _num(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:.3f}"
    if unit == "s":
        return f"{v:.2f}"
    if unit == "x":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    out = [f"# creditmeter bench, {meta['started_utc']}", ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if k != "started_utc"]
    out += ["", "| measurement | median | min-max | unit | notes |", "|---|---:|---:|---|---|"]
    for key, row in result["rows"].items():
        del key
        s = row["summary"]
        if s is None:
            out.append(
                f"| {row['label']} | {row['skipped'] or 'n/a'} | | {row['unit']} | {row['note']} |"
            )
            continue
        note = row["note"] + (f"; {row['extra']}" if row["extra"] else "")
        if not row["verified"]:
            note += "; NOT VERIFIED (balance drop != successes x cost)"
        out.append(
            f"| {row['label']} | {_num(s['median'], row['unit'])} | "
            f"{_num(s['min'], row['unit'])}-{_num(s['max'], row['unit'])} | "
            f"{row['unit']} | {note} |"
        )
    out += [
        "",
        "Ratios (computed within each run, then median and min-max over runs):",
        "",
        "| ratio | median | min-max |",
        "|---|---:|---:|",
    ]
    for name, s in result["ratios"].items():
        if s:
            out.append(f"| {name} | {s['median']:.2f}x | {s['min']:.2f}-{s['max']:.2f}x |")
        else:
            out.append(f"| {name} | n/a | |")
    for group, title in (
        ("issue 15", "Issue 15's table (median and min-max over runs; ratios within each run):"),
        ("earlier", "Earlier targets:"),
    ):
        out += ["", title, "", "| target | median | min-max | limit | vs limit | status | of |"]
        out.append("|---|---:|---:|---:|---:|---|---|")
        out += [_target_line(t) for t in result["targets"] if t["group"] == group]
    return "\n".join(out) + "\n"


def _target_line(t: dict[str, Any]) -> str:
    if t["value"] is None:
        return f"| {t['target']} | n/a | | | | {t['status']} | |"
    spread = f"{_short(t['min'])}-{_short(t['max'])}"
    limit = f"{t['op']} {_short(t['goal'])}" if "goal" in t else ""
    vs_limit = f"{t['vs_limit']:.2f}x" if "vs_limit" in t else ""
    return (
        f"| {t['target']} | {_short(t['value'])} | {spread} | {limit} | {vs_limit} | "
        f"{t.get('detail', t['status'])} | {t['from']} |"
    )


def write(result: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = result["meta"]["started_utc"].replace(":", "").replace("-", "")
    md_path = directory / f"bench-{stamp}.md"
    json_path = directory / f"bench-{stamp}.json"
    text = markdown(result)
    md_path.write_text(text)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    (directory / "latest.md").write_text(text)
    return md_path, json_path
