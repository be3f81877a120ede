"""The runner's own cost: a backlog of no-op jobs drained by `responder serve`, against another checkout.

    .venv/bin/python -m bench.drain --against /tmp/base     # a checkout of the baseline commit
    .venv/bin/python -m bench.drain --postgres ...          # the same on PostgreSQL, one process
    git worktree add /tmp/base <rev>                        # one way to make that checkout

A store with `--jobs` queued no-op jobs (distinct incidents and stacks) is written, then a daemon
(INFO logs to a file, the intake benchmark's no-op playbook) is started on it (SQLite: a copy of one
file; PostgreSQL: a fresh database of a throw-away cluster with production durability, written
afresh each run). The backlog is held back until the daemon answers, then released (and one signed
delivery wakes its workers). A run's rate is its jobs over the daemon's own time from the first
job's start to the last one's end; its CPU time per job is the daemon's (/proc/<pid>/stat ticks),
with PostgreSQL the daemon's and the cluster's together, from the release until no job is left.
The two checkouts take turns, the order rotating from run to run. This is what a flood of pages leaves the runner to do once intake has
stored it, and what competes with intake for the one core while the flood goes on.
"""

import argparse
import asyncio
import contextlib
import inspect
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.common import (
    NOOP_PLAYBOOKS,
    REPO,
    UNFINISHED,
    Server,
    cpu_seconds,
    deliveries,
    machine,
    responder_server,
)
from bench.intake import postgres_cluster, postgres_pids
from responder.events import Event, Incident
from responder.store import NewDelivery, NewJob, Store
from tests.postgres_server import PostgresServer, fresh_database

HOLD = "UPDATE jobs SET status = 'scheduled', not_before = 1e12 WHERE status = 'queued'"
RELEASE = "UPDATE jobs SET status = 'queued', not_before = 0 WHERE status = 'scheduled'"
DRAINED = "SELECT COUNT(*), MIN(started_at), MAX(finished_at) FROM jobs WHERE status = 'succeeded'"
Row = tuple[Any, ...]

# `backlog` is run by each checkout's own code (so its store has that checkout's schema): these are
# the imports it needs, and the call, around a copy of its source.
BACKLOG_IMPORTS = """
import asyncio, sys, time
from pathlib import Path
from responder.events import Event, Incident
from responder.store import NewDelivery, NewJob, Store
"""
BACKLOG_CALL = """
if sys.argv[1].startswith("postgresql://"):
    from responder.store.postgres import PostgresStore
    store = PostgresStore(sys.argv[1])
else:
    from responder.store.sqlite import SQLiteStore
    store = SQLiteStore(Path(sys.argv[1]))
asyncio.run(backlog(store, int(sys.argv[2])))
"""


async def backlog(store: Store, count: int) -> None:
    """`count` queued no-op jobs in `store`, each its own incident and stack."""
    await store.open()
    try:
        for start in range(0, count, 500):
            batch = []
            for i in range(start, min(count, start + 500)):
                event = Event(
                    id=f"drain-{i}", source="pagerduty", type="incident.triggered",
                    resource_type="incident", incident=Incident(id=f"QDRAIN{i}"),
                )  # fmt: skip
                delivery = NewDelivery.of(
                    event, id=f"drain-{i}", body=b"{}", received_at=time.time()
                )
                job = NewJob("noop", "burner", f"incident-QDRAIN{i}", event, 3)
                batch.append((delivery, [job]))
            await store.record_deliveries(batch)
    finally:
        await store.close()


async def write_backlog(checkout: Path, target: str, count: int) -> None:
    """`backlog` into `target` (a PostgreSQL URL or an SQLite file), by `checkout`'s code."""
    script = f"{BACKLOG_IMPORTS}\n{inspect.getsource(backlog)}\n{BACKLOG_CALL}"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, target, str(count), cwd=checkout
    )
    if await writer.wait():
        raise RuntimeError(f"{checkout} could not write the backlog")


@contextlib.asynccontextmanager
async def store_queries(data: Path, url: str) -> AsyncIterator[Callable[[str], Awaitable[Row]]]:
    """The first row of a statement, on one connection held for the whole run: a connection per
    poll would fork a PostgreSQL backend each time, counted as the jobs' CPU."""
    if not url:
        # Autocommit: the hold and the release are seen by the daemon as soon as they are made.
        db = sqlite3.connect(data / "responder.db", timeout=30, isolation_level=None)
        with contextlib.closing(db):

            async def query_sqlite(sql: str) -> Row:
                return tuple(db.execute(sql).fetchone() or ())

            yield query_sqlite
        return
    connection = await asyncpg.connect(url)
    try:

        async def query_postgres(sql: str) -> Row:
            return tuple(await connection.fetchrow(sql) or ())

        yield query_postgres
    finally:
        await connection.close()


async def wake(server: Server) -> None:
    """One signed delivery: its job wakes the daemon's idle workers, which find the released
    backlog (SQLite has no way to tell another process of work)."""
    (delivery,) = deliveries(1, incident_prefix="QWAKE")
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url, data=delivery.body, headers=delivery.headers()) as response,
    ):
        if response.status != 202:
            raise RuntimeError(f"the wake-up delivery was answered {response.status}")


async def drain(
    checkout: Path, template: Path, work: Path, count: int, cluster: PostgresServer | None
) -> tuple[float, float]:
    """Jobs per second, and CPU µs per job, of one daemon of `checkout` draining the backlog
    (`template`, the SQLite file it wrote; with `cluster`, written afresh into a new database)."""
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(mode=0o700)
    if cluster is None:
        shutil.copy(template, data / "responder.db")
        return await _timed(checkout, data, work, "", None)
    async with fresh_database(cluster) as url:
        await write_backlog(checkout, url, count)
        return await _timed(checkout, data, work, url, cluster)


async def _timed(
    checkout: Path, data: Path, work: Path, url: str, cluster: PostgresServer | None
) -> tuple[float, float]:
    # Set either way: a store setting of the caller's environment must not reach the daemon.
    env = {"RESPONDER_DATABASE_URL": url, "RESPONDER_PROCESSES": "1"}
    server = responder_server(data, NOOP_PLAYBOOKS, RESPONDER_LOG_LEVEL="INFO", **env)
    server.cwd = checkout

    def cpu() -> float:
        return cpu_seconds(server.pids() + (postgres_pids(cluster) if cluster else []))

    async with store_queries(data, url) as query:
        # The backlog waits until the daemon answers: its runner starts before it listens, and
        # would otherwise drain part of it (a small one entirely) before the clock starts.
        await query(HOLD)
        await server.start(work / "server.log")
        try:
            used = cpu()
            await query(RELEASE)
            await wake(server)
            while (await query(UNFINISHED))[0]:  # noqa: ASYNC110 (another process: polled)
                await asyncio.sleep(0.02)
            used = cpu() - used
        finally:
            server.stop()
        # Timed by the daemon's own clock, from the first job's start to the last one's end.
        drained, first, last = await query(DRAINED)
    return drained / (last - first), used / drained * 1e6


async def measure(args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    systems = {"this checkout": REPO}
    if args.against:
        systems["baseline"] = args.against.resolve()
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="responder-drain-")))
        cluster = stack.enter_context(postgres_cluster()) if args.postgres else None
        templates = {name: tmp / f"backlog-{i}.db" for i, name in enumerate(systems)}
        if cluster is None:
            for name, checkout in systems.items():
                await write_backlog(checkout, str(templates[name]), args.jobs)
        names = list(systems)
        for run in range(args.runs):
            for name in names[run % len(names) :] + names[: run % len(names)]:
                work = tmp / name.replace(" ", "-")
                work.mkdir(exist_ok=True)
                rate, cpu = await drain(systems[name], templates[name], work, args.jobs, cluster)
                found[name].append((rate, cpu))
                print(
                    f"run {run} {name}: {rate:.0f} jobs/s, {cpu:.0f} µs CPU a job", file=sys.stderr
                )
    return found


def report(found: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> str:
    facts = machine()
    lines = [
        f"Machine: {facts['cores']} cores ({facts['cpu']}), Python {facts['python']}."
        f" {'PostgreSQL 15, one process' if args.postgres else 'SQLite'}; {args.jobs} queued no-op"
        f" jobs a run, {args.runs} runs per checkout; medians, spread min–max.",
        "",
        "| checkout | jobs/s | spread | CPU µs a job | spread |",
        "|---|---|---|---|---|",
    ]
    for name, runs in found.items():
        rates, cpus = [r for r, _ in runs], [c for _, c in runs]
        lines.append(
            f"| {name} | {statistics.median(rates):.0f} | {min(rates):.0f}–{max(rates):.0f}"
            f" | {statistics.median(cpus):.0f} | {min(cpus):.0f}–{max(cpus):.0f} |"
        )
    if "baseline" in found:
        ratios = [
            mine[0] / base[0]
            for mine, base in zip(found["this checkout"], found["baseline"], strict=True)
        ]
        lines += [
            "",
            "Jobs/s, this checkout / baseline, run by run: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f"; median **{statistics.median(ratios):.2f}×**.",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", type=Path, help="a checkout of the baseline to compare with")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    print(report(asyncio.run(measure(args)), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
