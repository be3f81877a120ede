"""Run every benchmark and write the figures to bench/RESULTS.md.

    .venv/bin/python -m bench.run                 # the full suite (about 30 minutes on 2 cores)
    .venv/bin/python -m bench.run --only intake   # one part; only its section of the report changes
    .venv/bin/python -m bench.run --smoke         # seconds-long runs: checks the scripts still work

Intake is driven by Debian's `wrk` (scripts/install-test-services installs it): see bench/intake.py.

Each comparison alternates the system under test with its baseline in the same invocation and reports
the median of the runs, their spread (min–max), and the ratio computed run by run.
"""

import argparse
import asyncio
import datetime
import os
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
    cpu_seconds,
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
    "concurrent_runs": 4,
    "worker_counts": [2, 4, 8],
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
    "worker_counts": [2],
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


def _seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def job_timings(job: dict[str, Any]) -> dict[str, float]:
    """The job's own account, in seconds: its steps (`duration_ms` each), from being queued to
    starting, and from starting to finishing."""
    timings = {f"step {s['step']}": s["duration_ms"] / 1000 for s in job.get("steps", [])}
    timings["queued → started"] = _seconds(job["started_at"]) - _seconds(job["created_at"])
    timings["started → finished"] = _seconds(job["finished_at"]) - _seconds(job["started_at"])
    return timings


async def end_to_end(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    began = datetime.datetime.now(datetime.UTC)
    data_dir = work / "e2e"
    data_dir.mkdir()
    # INFO, the default: the engine's events and the steps are logged as in production.
    server = responder_server(data_dir, BUILTIN_PLAYBOOKS, RESPONDER_LOG_LEVEL="INFO")
    await server.start(data_dir / "server.log")
    base = server.url.removesuffix("/webhooks/pagerduty")
    target = f"{base}/healthz"
    times: dict[str, list[float]] = {
        "responder": [],
        "floor": [],
        "tutorial": [],
        "responder CPU": [],
        "floor CPU": [],
    }
    timings: dict[str, list[float]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for run in range(cfg["e2e_runs"]):
                started, cpu = time.monotonic(), cpu_seconds(server.pids())
                job = await wait_job(
                    session, base, await post_trigger(session, server.url, f"QE2E{run}-")
                )
                times["responder"].append(time.monotonic() - started)
                # The daemon's and its processes' (see concurrency()).
                times["responder CPU"].append(cpu_seconds(server.pids()) - cpu)
                for name, seconds in job_timings(job).items():
                    timings.setdefault(name, []).append(seconds)
                wall, cpu = await asyncio.to_thread(
                    stacks.floor_up, data_dir, f"floor-{run}", target
                )
                times["floor"].append(wall)
                times["floor CPU"].append(cpu)
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
                    + f" steps {[(s['step'], s['duration_ms']) for s in job.get('steps', [])]}"
                )
            # One more provisioning, untimed, with its `pulumi` processes counted: watching /proc
            # takes CPU from what it watches.
            census = stacks.CliCensus(data_dir / "pulumi-home")
            census.start()
            try:
                await wait_job(session, base, await post_trigger(session, server.url, "QCENSUS-"))
            finally:
                processes = census.stop()
            log(f"e2e census: {[(p, round(a, 2), round(b, 2)) for p, a, b in processes]}")
    finally:
        server.stop()
    n = len(times["tutorial"])
    return {
        "times": {k: summary(v) for k, v in times.items()},
        "runs": times,
        "timings": {k: summary(v) for k, v in timings.items()},
        "processes": processes,
        "vs_floor": summary(
            [r / f for r, f in zip(times["responder"], times["floor"], strict=True)]
        ),
        "tutorial_vs_responder": summary(
            [t / r for t, r in zip(times["tutorial"], times["responder"][:n], strict=True)]
        ),
        "load": load,
        "started": began,
    }


async def incidents_at_once_and_in_a_row(
    cfg: dict[str, Any], work: Path, workers: int, run: int
) -> dict[str, float]:
    """One daemon with `workers` job workers: `incidents` new incidents posted at once, and as many
    one after the other (each posted when the previous one's job has finished): each one's wall
    time, s, and the cores its processes kept busy meanwhile."""
    data_dir = work / f"concurrency-{workers}-{run}"
    data_dir.mkdir()
    server = responder_server(
        data_dir, BUILTIN_PLAYBOOKS, RESPONDER_LOG_LEVEL="INFO", RESPONDER_WORKERS=str(workers)
    )
    await server.start(data_dir / "server.log")
    base = server.url.removesuffix("/webhooks/pagerduty")
    walls: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for mode in ["at once", "in a row"][:: 1 if run % 2 == 0 else -1]:
                prefix = f"Q{mode[:2].upper()}{workers}R{run}-{uuid.uuid4().hex[:4]}-"
                # The daemon's and every process under it: a live one's own, and in each the
                # processes it has reaped (the CLI's plugins, the workers' CLIs, ended workers).
                # Kept workers outlive the measure, so the daemon's reaped children are not enough.
                cpu = cpu_seconds(server.pids())
                started = time.monotonic()
                if mode == "at once":
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
                            session, base, await post_trigger(session, server.url, f"{prefix}{i}-")
                        )
                walls[mode] = time.monotonic() - started
                walls[f"{mode} cores"] = (cpu_seconds(server.pids()) - cpu) / walls[mode]
    finally:
        server.stop()
    log(
        f"concurrency run {run}, {workers} workers: at once {walls['at once']:.1f}s, "
        f"in a row {walls['in a row']:.1f}s; cores busy {walls['at once cores']:.2f}, "
        f"{walls['in a row cores']:.2f}"
    )
    return walls


async def concurrency(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Each worker count on its own daemon, the counts taking turns (their order rotates from run
    to run); in each, the incidents at once and in a row (their order alternates)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    began = datetime.datetime.now(datetime.UTC)
    counts: list[int] = cfg["worker_counts"]
    walls: dict[int, dict[str, list[float]]] = {w: {} for w in counts}
    for run in range(cfg["concurrent_runs"]):
        for workers in counts[run % len(counts) :] + counts[: run % len(counts)]:
            measured = await incidents_at_once_and_in_a_row(cfg, work, workers, run)
            for mode, wall in measured.items():
                walls[workers].setdefault(mode, []).append(wall)
    by_workers = {}
    for workers, w in walls.items():
        ratios = [s / c for s, c in zip(w["in a row"], w["at once"], strict=True)]
        by_workers[workers] = {
            "walls": {mode: summary(v) for mode, v in w.items()},
            "speedup": summary(ratios),
            "ratios": ratios,
        }
    return {"by_workers": by_workers, "load": load, "started": began}


async def footprint(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    data_dir = work / "footprint"
    data_dir.mkdir()
    server: Server = responder_server(data_dir, NOOP_PLAYBOOKS)
    await server.start(data_dir / "server.log")
    try:
        await asyncio.sleep(cfg["idle_seconds"])  # let start-up settle before measuring "idle"
        idle, idle_total = server.rss_mb(), server.rss_mb(children=True)
        idle_store = server.store_rss_mb()
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
        "idle_store_mb": idle_store,
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


def provenance(results: dict[str, Any], command: str) -> list[str]:
    """A section's own command, date, load before it and machine (`--only` re-measures one part)."""
    when, m = datetime.datetime.now(datetime.UTC), machine()
    return [
        f"Command: `{command}` — {results['started']:%Y-%m-%d %H:%M}–{when:%H:%M} UTC; load "
        f"average (1, 5, 15 min) before: {results['load']}. Machine: {m['cores']} cores "
        f"({m['cpu']}), {m['memory']}, Linux {m['kernel']}, Python {m['python']}, {m['pulumi']}.",
        "",
    ]


def _spread(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['min']:.{digits}f}–{s['max']:.{digits}f}"


def e2e_section(cfg: dict[str, Any], e: dict[str, Any], command: str) -> str:
    t = e["times"]
    runs = e["runs"]
    ratios = [r / f for r, f in zip(runs["responder"], runs["floor"], strict=True)]
    critical = [p for p, _, _ in e["processes"] if p != "stack tag"]
    tags = len(e["processes"]) - len(critical)
    lines = [
        f"## End to end (signed `incident.triggered` → burner stack `up` finished, {cfg['e2e_runs']} runs)",
        "",
        *provenance(e, command),
        "responder runs the built-in provisioning playbook at `RESPONDER_LOG_LEVEL=INFO` (log to a "
        "file); the floor and the tutorial run the same program (a scratch directory and an HTTP "
        "probe of the daemon's `/healthz`) on the same file backend, alternating with it.",
        "",
        "| path | median s | spread s |",
        "|---|---|---|",
        f"| responder (webhook → job succeeded, seen by polling the API) | {t['responder']['median']:.2f} | {_spread(t['responder'])} |",
        f"| floor: Automation API `up` alone, warm process, same program and backend | {t['floor']['median']:.2f} | {_spread(t['floor'])} |",
        f"| tutorial: fresh venv + pip install + select + config + refresh + up | {t['tutorial']['median']:.2f} | {_spread(t['tutorial'])} |",
        f"| CPU time, responder (the daemon and every process under it) | {t['responder CPU']['median']:.2f} | {_spread(t['responder CPU'])} |",
        f"| CPU time, floor (the bench process during the `up`, and the processes it started) | {t['floor CPU']['median']:.2f} | {_spread(t['floor CPU'])} |",
        "",
        "responder / floor, run by run: " + ", ".join(f"{r:.2f}" for r in ratios) + "; "
        f"median **{e['vs_floor']['median']:.2f}×** (spread {_spread(e['vs_floor'])}); "
        f"tutorial / responder: **{e['tutorial_vs_responder']['median']:.1f}×** faster "
        f"(spread {_spread(e['tutorial_vs_responder'], 1)}).",
        "",
        "The responder job's own timings (`GET /jobs/{id}`: each step's `duration_ms`, and its "
        "`created_at`, `started_at`, `finished_at`), over the same runs:",
        "",
        "| part of the job | median s | spread s |",
        "|---|---|---|",
        *[f"| {name} | {v['median']:.2f} | {_spread(v)} |" for name, v in e["timings"].items()],
        "",
        f"`pulumi` processes of one more provisioning (untimed; /proc scanned every 4 ms): "
        f"**{len(critical)} on the critical path** ({', '.join(f'`{p}`' for p in critical)}), "
        + (
            f"and {tags} `stack tag set` beside the `up`. "
            if tags
            else "and no `stack tag set` (the tags go straight into the file backend's tags file). "
        )
        + "Each (start from the first one's, and lifetime, s; ±0.01 s):",
        "",
        "| process | starts at | lives |",
        "|---|---|---|",
        *[f"| `{p}` | {at:.2f} | {lived:.2f} |" for p, at, lived in e["processes"]],
        "",
    ]
    return "\n".join(lines)


def concurrency_section(cfg: dict[str, Any], c: dict[str, Any], command: str) -> str:
    lines = [
        f"## Concurrency ({cfg['incidents']} new incidents, {cfg['concurrent_runs']} runs per worker count)",
        "",
        *provenance(c, command),
        f"Each run starts a daemon per `RESPONDER_WORKERS` value (the values take turns, their order "
        f"rotating from run to run; INFO logs to a file); on it, {cfg['incidents']} signed "
        "`incident.triggered` for new incidents are posted at once, and as many in a row (each posted "
        "when the previous one's job has finished), the two orders alternating. Wall time from the "
        "first post to the last job finished.",
        "",
        "| workers | at once, median s (spread) | in a row, median s (spread) | in a row / at once, run by run | median | cores busy at once / in a row (median) |",
        "|---|---|---|---|---|---|",
        *[
            f"| {w} | {v['walls']['at once']['median']:.1f} ({_spread(v['walls']['at once'], 1)}) "
            f"| {v['walls']['in a row']['median']:.1f} ({_spread(v['walls']['in a row'], 1)}) "
            f"| {', '.join(f'{r:.2f}' for r in v['ratios'])} | **{v['speedup']['median']:.2f}×** "
            f"| {v['walls']['at once cores']['median']:.2f} / {v['walls']['in a row cores']['median']:.2f} |"
            for w, v in c["by_workers"].items()
        ],
        "",
        "Cores busy: CPU time (user + system) of the daemon and every process under it (its "
        "workers, the `pulumi` CLI, its plugins and the program) over the wall time; 2 is the machine.",
        "",
    ]
    return "\n".join(lines)


def footprint_section(f: dict[str, Any]) -> str:
    lines = [
        "## Footprint",
        "",
        f"- Start to `/readyz` 200: **{f['ready_seconds']:.2f} s**",
        f"- RSS idle: daemon **{f['idle_mb']:.0f} MB**, its store process {f['idle_store_mb']:.0f} MB; "
        f"with those and its warm worker process {f['idle_total_mb']:.0f} MB",
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
        rendered["e2e"] = e2e_section(cfg, results["e2e"], command)
    if "concurrency" in results:
        rendered["concurrency"] = concurrency_section(cfg, results["concurrency"], command)
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
