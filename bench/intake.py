"""Intake under a compiled load generator: wrk replaying pre-signed, distinct PagerDuty deliveries."""

import asyncio
import contextlib
import datetime
import os
import resource
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    NOOP_PLAYBOOKS,
    REPO,
    UNFINISHED,
    Server,
    cpu_seconds,
    deliveries,
    descendants,
    machine,
    percentile,
    responder_server,
    summary,
    webhook_server,
)
from bench.vegeta import run_vegeta
from bench.wrk import LUA, POOL_RATE, run_wrk, write_pool, wrk_argv
from tests.postgres_server import PostgresServer, binaries, fresh_database


class DurablePostgres(PostgresServer):
    """The tests' throw-away cluster, but with production durability: the tests turn fsync and
    synchronous commit off for speed, which would flatter the store against SQLite's fsyncs."""

    def resume(self) -> None:
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port}"]
        options += [f"-c unix_socket_directories={self.root}", "-c max_connections=200"]
        try:
            self._as_postgres(
                str(binaries() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", "60", "-o", " ".join(options), "start",
            )  # fmt: skip
        except Exception:
            self.stop()
            raise


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresServer]:
    server = DurablePostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_pids(cluster: PostgresServer) -> list[int]:
    """The cluster's server processes: the postmaster (its pid file's first line) and its children.
    (Not found by the cluster's environment marker: PostgreSQL overwrites it with process titles.)"""
    with contextlib.suppress(OSError, ValueError):
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        return [postmaster, *descendants(postmaster)]
    return []


def supervisor_ready() -> bool:
    """Whether this checkout runs several server processes on one port (`RESPONDER_PROCESSES`)."""
    cli = REPO / "responder" / "cli.py"
    return (REPO / "responder" / "supervisor.py").exists() and "reuse_port" in cli.read_text()


def unix_socket_url(cluster: PostgresServer, url: str) -> str:
    """`url`'s database on `cluster`, by the cluster's Unix socket instead of TCP."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode({"host": str(cluster.root), "port": cluster.port})
    return urllib.parse.urlunsplit((parts.scheme, f"{parts.username}@", parts.path, query, ""))


# How often the drain after a flood is looked at: its time is measured to this much.
DRAIN_POLL = 0.05  # seconds


async def unfinished_jobs(url: str, data_dir: Path) -> int:
    """The jobs of a run's store (PostgreSQL's at `url`, else SQLite's in `data_dir`) not finished."""
    if not url:
        with contextlib.closing(sqlite3.connect(data_dir / "responder.db")) as db:
            return int(db.execute(UNFINISHED).fetchone()[0])
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval(UNFINISHED))
    finally:
        await connection.close()


async def drain_seconds(url: str, data_dir: Path) -> float:
    """How long the daemon takes to finish the jobs it still has (0 if none)."""
    started = time.monotonic()
    while True:  # polled: the store announces no end of its jobs to an outside reader
        if not await unfinished_jobs(url, data_dir):
            return time.monotonic() - started
        await asyncio.sleep(DRAIN_POLL)


def stored_sqlite(data_dir: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(data_dir / "responder.db")) as db:
        return {row[0] for row in db.execute("SELECT id FROM deliveries")}


async def stored_postgres(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        return {row["id"] for row in await connection.fetch("SELECT id FROM deliveries")}
    finally:
        await connection.close()


@dataclass(frozen=True)
class Setup:
    """One configuration of the daemon under test: its store and how many server processes."""

    label: str
    store: str  # "sqlite" or "postgres"
    processes: int
    target: float  # the target for responder / adnanh/webhook
    note: str = ""
    # Variants of responder measured alongside, each compared with the setup's own responder.
    variants: tuple[str, ...] = ()


INFO, WEBHOOK = "responder", "adnanh/webhook"
WARNING, ONE = "responder at WARNING", "responder, 1 process"
NO_JOB = "responder, no job (intake alone)"
# PostgreSQL on the same machine reached by its Unix socket (as Debian's clients do by default),
# not by TCP on loopback: a co-located database's cheaper road, measured beside the TCP one.
UNIX = "responder, PostgreSQL by its Unix socket"
VARIANT_ENV = {
    WARNING: {"RESPONDER_LOG_LEVEL": "WARNING"},
    ONE: {"RESPONDER_PROCESSES": "1"},
    NO_JOB: {"RESPONDER_PLAYBOOKS_DIR": str(REPO / "bench" / "no_job_playbooks")},
}


def setups() -> list[Setup]:
    """(a) one process on SQLite (issue 12), and at WARNING for what INFO's lines cost; (b) a process
    per core on PostgreSQL (issue 11), one process for how it scales, and no job for what intake
    costs alone."""
    cores = os.cpu_count() or 1
    if supervisor_ready():
        multi = Setup(
            f"(b) {cores} processes, PostgreSQL",
            "postgres",
            cores,
            1.0,
            variants=(ONE, NO_JOB, UNIX),
        )
    else:
        note = "the supervisor (`RESPONDER_PROCESSES`) is not in this checkout yet, so one process"
        multi = Setup("(b) 1 process, PostgreSQL", "postgres", 1, 1.0, note)
    return [Setup("(a) 1 process, SQLite", "sqlite", 1, 0.6, variants=(WARNING,)), multi]


async def measure(
    cfg: dict[str, Any], work: Path, setup: Setup, pool: Path, cluster: PostgresServer | None
) -> dict[str, Any]:
    """Alternate responder (in `setup`) and adnanh/webhook under wrk, `cfg["runs"]` times each
    (the order rotates from run to run)."""
    systems = [INFO, WEBHOOK, *(setup.variants if cfg["variants"] else ())]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    lost = acknowledged = 0
    for run in range(cfg["runs"]):
        shift = run % len(systems)
        for name in systems[shift:] + systems[:shift]:
            data_dir = work / f"{setup.store}-{run}-{name.replace('/', '-').replace(' ', '-')}"
            data_dir.mkdir()
            async with _database(cluster if name != WEBHOOK else None) as url:
                if name == WEBHOOK:
                    server = webhook_server(data_dir)
                else:
                    env = {"RESPONDER_LOG_LEVEL": "INFO"}
                    if url:  # with PostgreSQL the default is a process per core: say how many
                        env["RESPONDER_DATABASE_URL"] = url
                        if name == UNIX and cluster is not None:
                            env["RESPONDER_DATABASE_URL"] = unix_socket_url(cluster, url)
                        env["RESPONDER_PROCESSES"] = str(setup.processes)
                    env |= VARIANT_ENV.get(name, {})
                    server = responder_server(data_dir, NOOP_PLAYBOOKS, **env)
                fixed_rate = bool(cfg["open_seconds"]) and name in (INFO, WEBHOOK)
                figures, missing, acked = await _one_run(
                    cfg, data_dir, server, pool, url, fixed_rate, cluster
                )
            runs[name].append(figures)
            lost, acknowledged = lost + missing, acknowledged + acked
            print(
                f"[bench] intake {setup.label} run {run} {name}: {figures['throughput']:.0f}/s, "
                f"p99 {figures['p99']:.1f} ms, non-2xx {figures['errors']:.0f}",
                file=sys.stderr,
                flush=True,
            )
    ratios = [
        r["throughput"] / b["throughput"] for r, b in zip(runs[INFO], runs[WEBHOOK], strict=True)
    ]
    # The same, counting responder's deliveries only once their jobs have run (`_one_run`).
    with_jobs = [
        r["with_jobs"] / b["throughput"] for r, b in zip(runs[INFO], runs[WEBHOOK], strict=True)
    ]
    # Each variant against the setup's responder: WARNING / INFO (what the log lines cost), and
    # N processes / 1 process (how it scales).
    log_costs = [
        w["throughput"] / r["throughput"]
        for w, r in zip(runs.get(WARNING, []), runs[INFO], strict=False)
    ]
    scaling = [
        r["throughput"] / o["throughput"]
        for r, o in zip(runs[INFO], runs.get(ONE, []), strict=False)
    ]
    return {
        "setup": setup,
        "runs": runs,
        "ratios": ratios,
        "throughput_ratio": summary(ratios),
        "with_jobs": with_jobs,
        "log_costs": log_costs,
        "scaling": scaling,
        "lost": lost,
        "acknowledged": acknowledged,
    }


@contextlib.asynccontextmanager
async def _database(cluster: PostgresServer | None) -> AsyncIterator[str]:
    """A fresh database of `cluster` for one run (its URL), or "" for SQLite."""
    if cluster is None:
        yield ""
        return
    async with fresh_database(cluster) as url:
        yield url


async def _one_run(
    cfg: dict[str, Any],
    data_dir: Path,
    server: Server,
    pool: Path,
    url: str,
    fixed_rate: bool,
    cluster: PostgresServer | None,
) -> tuple[dict[str, float], int, int]:
    """wrk against a fresh server, then (if `fixed_rate`) its open-loop latency; the figures, and
    how many acknowledged deliveries are missing from its store, of how many."""

    def server_cpu() -> tuple[float, float]:  # CPU time of the server, and of its PostgreSQL
        return cpu_seconds(server.pids()), cpu_seconds(postgres_pids(cluster) if cluster else [])

    await server.start(data_dir / "server.log")
    opened = None
    try:
        (own, db), load = server_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
        result = await run_wrk(
            server.url, pool, data_dir, cfg["wrk_threads"], cfg["connections"], cfg["wrk_seconds"]
        )
        (own_after, db_after), done = server_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
        # adnanh/webhook stores nothing: PostgreSQL's own housekeeping meanwhile is not its.
        db = db_after - db if url else 0.0
        cpu = own_after - own + db
        load_cpu = done.ru_utime + done.ru_stime - load.ru_utime - load.ru_stime  # wrk's
        # adnanh/webhook runs each delivery's command before it answers; responder's jobs run
        # beside intake, and may still be running when wrk stops. Until they end, its work is not
        # done: its deliveries with their jobs run are counted over the flood and this drain.
        # (Also: the open loop below measures latency at the fixed rate, not behind a backlog.)
        behind, drain = 0, 0.0
        if server.name == "responder":
            behind = await unfinished_jobs(url, data_dir)
            drain = await drain_seconds(url, data_dir)
        if fixed_rate:
            count = int(cfg["rate"] * cfg["open_seconds"])
            opened = await run_vegeta(
                server.url, deliveries(count), cfg["rate"], cfg["open_seconds"], data_dir
            )
    finally:
        server.stop()
    errors = result.non_2xx + result.socket_errors + result.duplicates + result.wrapped
    figures = {
        "throughput": result.throughput,
        "requests": float(result.requests),
        "errors": float(errors),
        "p50": result.p50_ms,
        "p99": result.p99_ms,
        "max": result.max_ms,
        "cpu_us": cpu / max(result.requests, 1) * 1e6,  # server CPU per answered delivery
        "server_cores": cpu / result.seconds,
        "db_cores": db / result.seconds,  # of which PostgreSQL's
        "wrk_cores": load_cpu / result.seconds,
        "behind": float(behind),  # jobs not finished when wrk stopped
        "drain": drain,  # seconds until they were
        "with_jobs": result.ok / (result.seconds + drain),  # deliveries with their jobs run, per s
    }
    if opened is not None:
        figures |= {
            "open_p50": percentile(opened.latencies_ms, 50),
            "open_p99": percentile(opened.latencies_ms, 99),
            "open_max": max(opened.latencies_ms),
            "errors": figures["errors"] + opened.errors,
        }
    if server.name != "responder":
        return figures, 0, 0
    acknowledged = set(result.acknowledged) | set(opened.acknowledged if opened else [])
    if len(result.acknowledged) != result.ok:  # a 2xx without the delivery id: the answer changed
        figures["errors"] += abs(result.ok - len(result.acknowledged))
    if opened is not None and len(opened.acknowledged) != opened.ok:  # the same, in the open loop
        figures["errors"] += abs(opened.ok - len(opened.acknowledged))
    stored = await stored_postgres(url) if url else stored_sqlite(data_dir)
    return figures, len(acknowledged - stored), len(acknowledged)


async def intake(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Both configurations, each alternating with adnanh/webhook, from one pool of deliveries."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    started = datetime.datetime.now(datetime.UTC)
    pool = work / "pool.txt"
    # Every run of every server gets a fresh store, so one pool serves them all.
    write_pool(pool, int(POOL_RATE * cfg["wrk_seconds"]) + 1000)
    results = []
    for setup in setups():
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(postgres_cluster()) if setup.store == "postgres" else None
            results.append(await measure(cfg, work, setup, pool, cluster))
    lost = sum(r["lost"] for r in results)
    return {"configurations": results, "lost": lost, "load": load, "started": started}


def section(cfg: dict[str, Any], results: dict[str, Any], command: str) -> str:
    """The intake section of bench/RESULTS.md."""
    when, m = datetime.datetime.now(datetime.UTC), machine()
    argv = wrk_argv("URL", cfg["wrk_threads"], cfg["connections"], cfg["wrk_seconds"])
    argv[argv.index(str(LUA))] = str(LUA.relative_to(REPO))
    lines = [
        f"## Intake (signed PagerDuty V3 deliveries under wrk, {cfg['runs']} run(s) each)",
        "",
        f"Command: `{command}` — {results['started']:%Y-%m-%d %H:%M}–{when:%H:%M} UTC; load average "
        "(1, 5, 15 min) before: "
        f"{results['load']}.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}, Python "
        f"{m['python']}, {m['wrk']}, {m['webhook']}, PostgreSQL {binaries().parent.name} (Debian's; "
        "a throw-away cluster on loopback with the production durability settings: fsync and "
        "synchronous commit on). Settings: "
        + ", ".join(
            f"{k}={cfg[k]}" for k in ("runs", "wrk_seconds", "connections", "rate", "open_seconds")
        )
        + ".",
        "",
        f"Load: `{' '.join(argv)}` (Debian's wrk 4.1.0"
        + (", pinned to one core; the servers are not pinned" if argv[0] == "taskset" else "")
        + "), replaying pre-signed `incident.triggered` deliveries, each with its own "
        "`X-Webhook-Id`, event and incident; none is sent twice. responder runs at "
        "`RESPONDER_LOG_LEVEL=INFO` (the default) with its JSON log written to a file, and the "
        'no-op playbook (a job per delivery, run while intake goes on; "no job": a playbook no '
        "delivery matches, so intake alone). adnanh/webhook 2.8 checks "
        "the same HMAC-SHA256 over the body, then runs `/bin/true`; it stores nothing. The systems "
        "alternate (the order rotates from run to run), each run on a fresh server and a fresh "
        "store. Latency is wrk's (closed loop: from a "
        "request's send to its answer). Figures are medians of the runs, spread min–max.",
        "",
    ]
    for result in results["configurations"]:
        lines += _configuration(result)
    lost = results["lost"]
    errors = {
        system: sum(
            v["errors"]
            for r in results["configurations"]
            for name, values in r["runs"].items()
            for v in values
            if (name == WEBHOOK) == (system == WEBHOOK)
        )
        for system in (INFO, WEBHOOK)
    }
    if cfg["open_seconds"]:
        lines += _open_loop(cfg, results)
    lines += [
        f"Errors (non-2xx, socket errors, repeats): responder {errors[INFO]:.0f}, "
        f"adnanh/webhook {errors[WEBHOOK]:.0f}. Deliveries answered 2xx by responder but "
        f"missing from its store afterwards: **{lost}**.",
        "",
    ]
    return "\n".join(lines)


def _configuration(result: dict[str, Any]) -> list[str]:
    setup: Setup = result["setup"]
    ratio = result["throughput_ratio"]
    met = "met" if ratio["median"] >= setup.target else "not met"

    def row(name: str, values: list[dict[str, float]]) -> str:
        t, p99 = summary([v["throughput"] for v in values]), summary([v["p99"] for v in values])
        p50 = summary([v["p50"] for v in values])["median"]
        worst = max(v["max"] for v in values)
        errors = sum(v["errors"] for v in values)
        cpu, cores, db, wrk = (
            summary([v[k] for v in values])["median"]
            for k in ("cpu_us", "server_cores", "db_cores", "wrk_cores")
        )
        return (
            f"| {name} | {t['median']:.0f} | {t['min']:.0f}–{t['max']:.0f} | {p50:.1f} "
            f"| {p99['median']:.1f} ({p99['min']:.1f}–{p99['max']:.1f}) | {worst:.1f} | {errors:.0f} "
            f"| {cpu:.0f} | {cores:.2f}"
            + (f" ({db:.2f})" if setup.store == "postgres" else "")
            + f" | {wrk:.2f} |"
        )

    return [
        f"### {setup.label}" + (f": {setup.note}" if setup.note else ""),
        "",
        "| system | deliveries/s | spread | p50 ms | p99 ms (spread) | max ms (worst run) | errors "
        "| server CPU µs per delivery | server cores busy (PostgreSQL's) | wrk core busy |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            row("adnanh/webhook 2.8 + /bin/true" if name == WEBHOOK else name, values)
            for name, values in result["runs"].items()
        ),
        "",
        "responder / adnanh/webhook, run by run: "
        + ", ".join(f"{x:.2f}" for x in result["ratios"])
        + f"; median **{ratio['median']:.2f}×** (spread {ratio['min']:.2f}–{ratio['max']:.2f}); "
        f"target ≥ {setup.target:g}×: {met}.",
        *_jobs_run(result),
        *_log_cost(result["log_costs"]),
        *_scaling(setup, result["scaling"]),
        f"Acknowledged deliveries missing from the store: **{result['lost']}** of "
        f"{result['acknowledged']}.",
        "",
    ]


def _jobs_run(result: dict[str, Any]) -> list[str]:
    """The flood's jobs: how many were left when wrk stopped, and the rate counting them run."""
    ours = result["runs"][INFO]
    behind, total = (summary([v[k] for v in ours])["median"] for k in ("behind", "requests"))
    s, drain = summary(result["with_jobs"]), summary([v["drain"] for v in ours])
    rate = summary([v["with_jobs"] for v in ours])["median"]
    return [
        "",
        f"Jobs still queued or running when wrk stopped: {behind:.0f} of {total:.0f} (median), "
        f"finished {drain['median']:.1f} s later ({drain['min']:.1f}–{drain['max']:.1f}). Counting "
        f"each delivery once its job has run (over the flood and that drain): {rate:.0f}/s, "
        f"against adnanh/webhook run by run "
        + ", ".join(f"{x:.2f}" for x in result["with_jobs"])
        + f"; median **{s['median']:.2f}×** (spread {s['min']:.2f}–{s['max']:.2f}).",
        "",
    ]


def _log_cost(costs: list[float]) -> list[str]:
    if not costs:
        return []
    s = summary(costs)
    met = "met" if s["median"] <= 1.3 else "not met"
    return [
        "",
        "What INFO's log lines cost, as throughput at WARNING / at INFO, run by run: "
        + ", ".join(f"{x:.2f}" for x in costs)
        + f"; median **{s['median']:.2f}×** (spread {s['min']:.2f}–{s['max']:.2f}); "
        f"target ≤ 1.3×: {met}.",
        "",
    ]


def _scaling(setup: Setup, scaling: list[float]) -> list[str]:
    if not scaling:
        return []
    s = summary(scaling)
    return [
        "",
        f"{setup.processes} processes / 1 process, run by run: "
        + ", ".join(f"{x:.2f}" for x in scaling)
        + f"; median **{s['median']:.2f}×** (spread {s['min']:.2f}–{s['max']:.2f}).",
        "",
    ]


def _open_loop(cfg: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = [
        f"### Open loop at {cfg['rate']:g} deliveries/s for {cfg['open_seconds']:g} s",
        "",
        "Latency from each delivery's scheduled send (no coordinated omission), after the flood's "
        "jobs have run. The generator is vegeta (compiled, open loop: it sends on schedule whatever "
        "the answers; built from the Go module proxy, since Debian packages neither it nor `wrk2`), "
        "pinned to the core wrk uses, replaying pre-signed distinct deliveries as wrk does.",
        "",
        "| configuration | system | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for result in results["configurations"]:
        for name, values in result["runs"].items():
            if name not in (INFO, WEBHOOK):
                continue
            p50, p99 = (summary([v[k] for v in values])["median"] for k in ("open_p50", "open_p99"))
            worst = max(v["open_max"] for v in values)
            lines.append(
                f"| {result['setup'].label} | {name} | {p50:.1f} | {p99:.1f} | {worst:.1f} |"
            )
    return [*lines, ""]
