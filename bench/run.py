"""Run every benchmark and write the figures to bench/RESULTS.md.

    .venv/bin/python -m bench.run                 # the full suite (about 25 minutes on 2 cores)
    .venv/bin/python -m bench.run --only intake   # one part; only its section of the report changes
    .venv/bin/python -m bench.run --smoke         # seconds-long runs: checks the scripts still work

Intake is driven by Debian's `wrk` (scripts/install-test-services installs it): see bench/intake.py.

Each comparison alternates the system under test with its baseline in the same invocation and reports
the median of the runs, their spread (min–max), and the ratio computed run by run.
"""

import argparse
import asyncio
import datetime
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench import intake, stacks
from bench.common import (
    NOOP_PLAYBOOKS,
    REPO,
    Server,
    deliveries,
    drained,
    machine,
    responder_server,
    summary,
)
from bench.load import closed_loop

FULL = {
    "runs": 5,
    "wrk_seconds": 10.0,
    "wrk_threads": 1,
    "connections": 16,
    "rate": 200.0,
    "open_seconds": 5.0,
    "variants": True,
    "e2e_runs": 5,
    "tutorial_runs": 3,
    "concurrent_runs": 2,
    "incidents": 8,
    "footprint_deliveries": 10_000,
    "idle_seconds": 3.0,
}
SMOKE = {
    "runs": 1,
    "wrk_seconds": 1.0,
    "wrk_threads": 1,
    "connections": 4,
    "rate": 20.0,
    "open_seconds": 0.5,
    "variants": False,  # the same code as responder's own runs, with other settings
    "e2e_runs": 1,
    "tutorial_runs": 1,
    "concurrent_runs": 1,
    "incidents": 2,
    "footprint_deliveries": 50,
    "idle_seconds": 0.5,
}
BUILTIN_PLAYBOOKS = REPO / "playbooks"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
        await asyncio.sleep(cfg["idle_seconds"])  # let start-up settle before measuring "idle"
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


SECTIONS = {
    "intake": "## Intake",
    "e2e": "## End to end",
    "concurrency": "## Concurrency",
    "footprint": "## Footprint",
}


def header(cfg: dict[str, Any], command: str, smoke: bool) -> str:
    m = machine()
    return "\n".join(
        [
            "# Benchmark results" + (" (smoke run: figures meaningless)" if smoke else ""),
            "",
            f"Command: `{command}` — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
            "",
            f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}, Python {m['python']}, "
            f"pulumi {m['pulumi']}, {m['webhook']}, {m['wrk']}. Settings: `{cfg}`.",
            "",
            "Medians of the runs, spread as min–max; ratios are computed run by run (the two systems alternate).",
            "",
        ]
    )


def e2e_section(cfg: dict[str, Any], e: dict[str, Any]) -> str:
    t = e["times"]
    lines = [
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
    ]
    return "\n".join(lines)


def concurrency_section(cfg: dict[str, Any], c: dict[str, Any]) -> str:
    lines = [
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
    ]
    return "\n".join(lines)


def footprint_section(f: dict[str, Any]) -> str:
    lines = [
        "## Footprint",
        "",
        f"- Start to `/readyz` 200: **{f['ready_seconds']:.2f} s**",
        f"- RSS idle: daemon **{f['idle_mb']:.0f} MB**; with its warm worker process {f['idle_total_mb']:.0f} MB",
        f"- RSS after {f['deliveries']} deliveries (and their jobs): daemon **{f['after_mb']:.0f} MB** "
        f"(+{f['after_mb'] - f['idle_mb']:.0f} MB); with workers {f['after_total_mb']:.0f} MB; errors {f['errors']}",
        "",
    ]
    return "\n".join(lines)


def sections(cfg: dict[str, Any], results: dict[str, Any], command: str) -> dict[str, str]:
    """The report's section for each part that ran."""
    rendered = {}
    if "intake" in results:
        rendered["intake"] = intake.section(cfg, results["intake"], command)
    if "e2e" in results:
        rendered["e2e"] = e2e_section(cfg, results["e2e"])
    if "concurrency" in results:
        rendered["concurrency"] = concurrency_section(cfg, results["concurrency"])
    if "footprint" in results:
        rendered["footprint"] = footprint_section(results["footprint"])
    return rendered


def replace_sections(text: str, new: dict[str, str]) -> str:
    """`text` (a report) with the section of each part in `new` replaced (or added at the end), the
    rest kept as is."""
    lines = text.split("\n")
    for part, section in new.items():
        starts = [i for i, line in enumerate(lines) if line.startswith(SECTIONS[part])]
        if not starts:  # a new report, or one without this part yet: it goes at the end
            while lines and not lines[-1]:
                lines.pop()
            lines = [*lines, "", *section.split("\n")] if lines else section.split("\n")
            continue
        start = starts[0]
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = section.split("\n")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny runs, to check the scripts work")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=list(SECTIONS),
        help="run these parts only, and replace only their sections of an existing report",
    )
    args = parser.parse_args()
    cfg = SMOKE if args.smoke else FULL
    parts = args.only or list(SECTIONS)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="responder-bench-") as tmp:
        work = Path(tmp)
        for part, run in (
            ("intake", intake.intake),
            ("e2e", end_to_end),
            ("concurrency", concurrency),
            ("footprint", footprint),
        ):
            if part in parts:
                log(f"{part}...")
                results[part] = await run(cfg, work)
    command = "python -m bench.run" + (" --smoke" if args.smoke else "")
    if args.only:
        command += " --only " + " ".join(args.only)
    rendered = sections(cfg, results, command)
    old = args.out.read_text() if args.out.exists() else ""
    if set(parts) == set(SECTIONS):
        analysis = ""  # the hand-written analysis below the figures survives a re-run
        if "\n## Analysis" in old:
            analysis = old[old.index("\n## Analysis") :]
        report = "\n".join([header(cfg, command, args.smoke), *(rendered[p] for p in SECTIONS)])
        args.out.write_text(report + analysis)
    else:
        args.out.write_text(replace_sections(old, rendered))
    log(f"wrote {args.out}")
    return 1 if results.get("intake", {}).get("lost") else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
