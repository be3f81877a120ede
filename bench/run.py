"""Run every benchmark and write the figures to bench/RESULTS.md.

    .venv/bin/python -m bench.run            # the full suite (about 15 minutes on 2 cores)
    .venv/bin/python -m bench.run --smoke    # seconds-long runs: checks the scripts still work

Each comparison alternates the system under test with its baseline in the same invocation and reports
the median of the runs, their spread (min–max), and the ratio computed run by run.
"""

import argparse
import asyncio
import datetime
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench import stacks
from bench.common import (
    REPO,
    Server,
    deliveries,
    machine,
    percentile,
    responder_server,
    summary,
    webhook_server,
)
from bench.load import closed_loop, open_loop

FULL = {
    "runs": 3,
    "closed_seconds": 10.0,
    "concurrency": 32,
    "rate": 200.0,
    "open_seconds": 10.0,
    "e2e_runs": 5,
    "tutorial_runs": 3,
    "concurrent_runs": 2,
    "incidents": 8,
    "footprint_deliveries": 10_000,
}
SMOKE = {
    "runs": 1,
    "closed_seconds": 1.0,
    "concurrency": 4,
    "rate": 20.0,
    "open_seconds": 1.0,
    "e2e_runs": 1,
    "tutorial_runs": 1,
    "concurrent_runs": 1,
    "incidents": 2,
    "footprint_deliveries": 50,
}
NOOP_PLAYBOOKS = REPO / "bench" / "playbooks"
BUILTIN_PLAYBOOKS = REPO / "playbooks"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def intake(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    # Enough for far more than either server answers: every delivery is sent at most once.
    pool_size = int(5000 * cfg["closed_seconds"] + cfg["rate"] * cfg["open_seconds"] + 100)
    runs: dict[str, list[dict[str, float]]] = {"responder": [], "adnanh/webhook": []}
    lost = 0
    for run in range(cfg["runs"]):
        order = ["responder", "adnanh/webhook"] if run % 2 == 0 else ["adnanh/webhook", "responder"]
        for name in order:
            data_dir = work / f"intake-{run}-{name.replace('/', '-')}"
            data_dir.mkdir()
            server = (
                responder_server(data_dir, NOOP_PLAYBOOKS)
                if name == "responder"
                else webhook_server(data_dir)
            )
            pool = deliveries(pool_size)
            await server.start(data_dir / "server.log")
            try:
                closed = await closed_loop(
                    server.url, pool, cfg["concurrency"], cfg["closed_seconds"]
                )
                if name == "responder":
                    await drained(
                        server
                    )  # latency at the fixed rate, not behind the flood's backlog
                opened = await open_loop(
                    server.url, pool[closed.sent :], cfg["rate"], cfg["open_seconds"]
                )
            finally:
                server.stop()
            if name == "responder":
                stored = {
                    r[0]
                    for r in sqlite3.connect(data_dir / "responder.db").execute(
                        "SELECT id FROM deliveries"
                    )
                }
                missing = set(closed.acknowledged + opened.acknowledged) - stored
                lost += len(missing)
            runs[name].append(
                {
                    "throughput": closed.throughput,
                    "errors": closed.errors + opened.errors,
                    "p50": percentile(opened.latencies_ms, 50),
                    "p99": percentile(opened.latencies_ms, 99),
                    "max": max(opened.latencies_ms),
                    "open_ok": opened.ok,
                    "open_sent": opened.sent,
                }
            )
            log(
                f"intake run {run} {name}: {closed.throughput:.0f}/s closed, p99 {runs[name][-1]['p99']:.1f} ms open"
            )
    ratios = [
        r["throughput"] / b["throughput"]
        for r, b in zip(runs["responder"], runs["adnanh/webhook"], strict=True)
    ]
    return {"runs": runs, "throughput_ratio": summary(ratios), "lost": lost}


async def drained(server: Server) -> None:
    """Wait until the daemon has run every job the closed loop queued."""
    base = server.url.removesuffix("/webhooks/pagerduty")
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{base}/jobs?status=queued&limit=1") as response:
                if not (await response.json())["jobs"]:
                    return
            await asyncio.sleep(0.2)


async def post_trigger(session: aiohttp.ClientSession, url: str, incident: str) -> int:
    delivery = deliveries(1, incident_prefix=incident)[0]
    async with session.post(url, data=delivery.body, headers=delivery.headers()) as response:
        answer = await response.json()
    return int(answer["jobs"][0])


async def wait_job(session: aiohttp.ClientSession, base: str, job_id: int) -> dict[str, Any]:
    while True:
        async with session.get(f"{base}/jobs/{job_id}") as response:
            job: dict[str, Any] = await response.json()
        if job["status"] in ("succeeded", "failed", "refused", "cancelled", "rejected"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
            return job
        await asyncio.sleep(0.02)


async def end_to_end(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    data_dir = work / "e2e"
    data_dir.mkdir()
    server = responder_server(data_dir, BUILTIN_PLAYBOOKS)
    await server.start(data_dir / "server.log")
    base = server.url.removesuffix("/webhooks/pagerduty")
    target = f"{base}/healthz"
    times: dict[str, list[float]] = {"responder": [], "floor": [], "tutorial": []}
    try:
        async with aiohttp.ClientSession() as session:
            for run in range(cfg["e2e_runs"]):
                started = time.monotonic()
                await wait_job(
                    session, base, await post_trigger(session, server.url, f"QE2E{run}-")
                )
                times["responder"].append(time.monotonic() - started)
                times["floor"].append(
                    await asyncio.to_thread(stacks.floor_up, data_dir, f"floor-{run}", target)
                )
                if run < cfg["tutorial_runs"]:
                    times["tutorial"].append(
                        await asyncio.to_thread(
                            stacks.tutorial_request, data_dir, f"tutorial-{run}", target
                        )
                    )
                log(
                    f"e2e run {run}: responder {times['responder'][-1]:.2f}s floor {times['floor'][-1]:.2f}s"
                    + (
                        f" tutorial {times['tutorial'][-1]:.2f}s"
                        if run < cfg["tutorial_runs"]
                        else ""
                    )
                )
    finally:
        server.stop()
    n = len(times["tutorial"])
    return {
        "times": {k: summary(v) for k, v in times.items()},
        "vs_floor": summary(
            [r / f for r, f in zip(times["responder"], times["floor"], strict=True)]
        ),
        "tutorial_vs_responder": summary(
            [t / r for t, r in zip(times["tutorial"], times["responder"][:n], strict=True)]
        ),
    }


async def concurrency(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    data_dir = work / "concurrency"
    data_dir.mkdir()
    server = responder_server(data_dir, BUILTIN_PLAYBOOKS)
    await server.start(data_dir / "server.log")
    base = server.url.removesuffix("/webhooks/pagerduty")
    walls: dict[str, list[float]] = {"concurrent": [], "sequential": []}
    try:
        async with aiohttp.ClientSession() as session:
            for run in range(cfg["concurrent_runs"]):
                for mode in (
                    ["concurrent", "sequential"] if run % 2 == 0 else ["sequential", "concurrent"]
                ):
                    prefix = f"Q{mode[:3].upper()}{run}-{uuid.uuid4().hex[:4]}-"
                    started = time.monotonic()
                    if mode == "concurrent":
                        ids = await asyncio.gather(
                            *(
                                post_trigger(session, server.url, f"{prefix}{i}-")
                                for i in range(cfg["incidents"])
                            )
                        )
                        await asyncio.gather(*(wait_job(session, base, i) for i in ids))
                    else:
                        for i in range(cfg["incidents"]):
                            await wait_job(
                                session,
                                base,
                                await post_trigger(session, server.url, f"{prefix}{i}-"),
                            )
                    walls[mode].append(time.monotonic() - started)
                    log(f"concurrency run {run} {mode}: {walls[mode][-1]:.1f}s")
    finally:
        server.stop()
    return {
        "walls": {k: summary(v) for k, v in walls.items()},
        "speedup": summary(
            [s / c for s, c in zip(walls["sequential"], walls["concurrent"], strict=True)]
        ),
    }


async def footprint(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    data_dir = work / "footprint"
    data_dir.mkdir()
    server: Server = responder_server(data_dir, NOOP_PLAYBOOKS)
    await server.start(data_dir / "server.log")
    try:
        await asyncio.sleep(3)
        idle, idle_total = server.rss_mb(), server.rss_mb(children=True)
        pool = deliveries(cfg["footprint_deliveries"])
        result = await closed_loop(server.url, pool, 16, 3600)
        await drained(server)
        after, after_total = server.rss_mb(), server.rss_mb(children=True)
    finally:
        server.stop()
    return {
        "ready_seconds": server.ready_seconds,
        "idle_mb": idle,
        "idle_total_mb": idle_total,
        "after_mb": after,
        "after_total_mb": after_total,
        "deliveries": result.ok,
        "errors": result.errors,
    }


def report(cfg: dict[str, Any], results: dict[str, Any], command: str, smoke: bool) -> str:
    m = machine()
    i, e, c, f = results["intake"], results["e2e"], results["concurrency"], results["footprint"]

    def row(name: str, values: list[dict[str, float]], key: str, fmt: str = "{:.0f}") -> str:
        s = summary([v[key] for v in values])
        return f"| {name} | {fmt.format(s['median'])} | {fmt.format(s['min'])}–{fmt.format(s['max'])} |"

    r, b = i["runs"]["responder"], i["runs"]["adnanh/webhook"]
    t = e["times"]
    lines = [
        "# Benchmark results" + (" (smoke run: figures meaningless)" if smoke else ""),
        "",
        f"Command: `{command}` — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}, Python {m['python']}, "
        f"pulumi {m['pulumi']}, {m['webhook']}. Settings: `{cfg}`.",
        "",
        "Medians of the runs, spread as min–max; ratios are computed run by run (the two systems alternate).",
        "",
        f"## Intake (signed PagerDuty V3 deliveries, {cfg['runs']} runs each)",
        "",
        f"Closed loop, {cfg['concurrency']} concurrent clients for {cfg['closed_seconds']:g} s (deliveries/s):",
        "",
        "| system | median | spread |",
        "|---|---|---|",
        row("responder", r, "throughput"),
        row("adnanh/webhook 2.8 + /bin/true", b, "throughput"),
        "",
        f"Throughput ratio responder / adnanh/webhook: **{i['throughput_ratio']['median']:.2f}×** "
        f"(spread {i['throughput_ratio']['min']:.2f}–{i['throughput_ratio']['max']:.2f}).",
        "",
        f"Open loop at {cfg['rate']:g} deliveries/s for {cfg['open_seconds']:g} s (latency from the scheduled send, ms):",
        "",
        "| system | p50 | p99 | max |",
        "|---|---|---|---|",
        *[
            f"| {name} | {summary([v['p50'] for v in vals])['median']:.1f} | {summary([v['p99'] for v in vals])['median']:.1f} "
            f"| {summary([v['max'] for v in vals])['median']:.1f} |"
            for name, vals in (("responder", r), ("adnanh/webhook", b))
        ],
        "",
        f"Errors: responder {sum(v['errors'] for v in r)}, adnanh/webhook {sum(v['errors'] for v in b)}. "
        f"Deliveries answered 2xx by responder but missing from its store afterwards: **{i['lost']}**.",
        "",
        f"## End to end (signed `incident.triggered` → burner stack `up` finished, {cfg['e2e_runs']} runs)",
        "",
        "| path | median s | spread s |",
        "|---|---|---|",
        f"| responder (webhook → job succeeded, seen by polling the API) | {t['responder']['median']:.2f} | {t['responder']['min']:.2f}–{t['responder']['max']:.2f} |",
        f"| floor: Automation API `up` alone, warm process, same program and backend | {t['floor']['median']:.2f} | {t['floor']['min']:.2f}–{t['floor']['max']:.2f} |",
        f"| tutorial: fresh venv + pip install + select + config + refresh + up | {t['tutorial']['median']:.2f} | {t['tutorial']['min']:.2f}–{t['tutorial']['max']:.2f} |",
        "",
        f"responder / floor: **{e['vs_floor']['median']:.2f}×** (spread {e['vs_floor']['min']:.2f}–{e['vs_floor']['max']:.2f}); "
        f"tutorial / responder: **{e['tutorial_vs_responder']['median']:.1f}×** faster "
        f"(spread {e['tutorial_vs_responder']['min']:.1f}–{e['tutorial_vs_responder']['max']:.1f}).",
        "",
        f"## Concurrency ({cfg['incidents']} incidents, {cfg['concurrent_runs']} runs each)",
        "",
        "| mode | median s | spread s |",
        "|---|---|---|",
        *[
            f"| {k} | {v['median']:.1f} | {v['min']:.1f}–{v['max']:.1f} |"
            for k, v in c["walls"].items()
        ],
        "",
        f"Speed-up concurrent vs sequential: **{c['speedup']['median']:.2f}×** "
        f"(spread {c['speedup']['min']:.2f}–{c['speedup']['max']:.2f}).",
        "",
        "## Footprint",
        "",
        f"- Start to `/readyz` 200: **{f['ready_seconds']:.2f} s**",
        f"- RSS idle: daemon **{f['idle_mb']:.0f} MB**; with its warm worker process {f['idle_total_mb']:.0f} MB",
        f"- RSS after {f['deliveries']} deliveries (and their jobs): daemon **{f['after_mb']:.0f} MB** "
        f"(+{f['after_mb'] - f['idle_mb']:.0f} MB); with workers {f['after_total_mb']:.0f} MB; errors {f['errors']}",
        "",
    ]
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny runs, to check the scripts work")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--only", nargs="*", choices=["intake", "e2e", "concurrency", "footprint"])
    args = parser.parse_args()
    cfg = SMOKE if args.smoke else FULL
    parts = args.only or ["intake", "e2e", "concurrency", "footprint"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="responder-bench-") as tmp:
        work = Path(tmp)
        for part, run in (
            ("intake", intake),
            ("e2e", end_to_end),
            ("concurrency", concurrency),
            ("footprint", footprint),
        ):
            if part in parts:
                log(f"{part}...")
                results[part] = await run(cfg, work)
    if set(parts) == {"intake", "e2e", "concurrency", "footprint"}:
        command = "python -m bench.run" + (" --smoke" if args.smoke else "")
        analysis = ""  # the hand-written analysis below the figures survives a re-run
        if args.out.exists() and "\n## Analysis" in args.out.read_text():
            analysis = args.out.read_text()[args.out.read_text().index("\n## Analysis") :]
        args.out.write_text(report(cfg, results, command, args.smoke) + analysis)
        log(f"wrote {args.out}")
    else:
        print(results)
    return 1 if results.get("intake", {}).get("lost") else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
