"""Failover time: a node killed in the middle of an `up` → its job finished by another node.

    .venv/bin/python -m bench.failover                  # 3 runs with 10 s and 30 s leases
    .venv/bin/python -m bench.failover --runs 1 --leases 3 --sleep 1   # a quick check

Two `responder serve` nodes share a throw-away PostgreSQL (jobs, and Pulumi's `postgres://` state),
with the real CLI. Node A alone takes an incident whose stack's one resource takes `--sleep` seconds
to create; once the resource is being created, node B starts and every process of node A is killed
(SIGKILL, as when its machine dies). Measured from the kill: when B took the job over (the lease
expired), and when the job succeeded on B (after repairing and refreshing the stack, and running the
`up` again, the resource's seconds included). Prints a Markdown section for bench/RESULTS.md.
"""

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.helpers import pd_event
from tests.nodes import Node
from tests.postgres_server import PostgresServer, fresh_database


async def one_run(
    server: PostgresServer, root: Path, lease: float, sleep: float
) -> dict[str, float]:
    async with (
        fresh_database(server) as jobs_url,
        fresh_database(server) as pulumi_url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
    ):
        a, b = Node(root, "a", jobs_url, pulumi_url), Node(root, "b", jobs_url, pulumi_url)
        try:
            a.start(lease_seconds=str(lease))
            await a.wait_ready(session)
            incident = f"QFAIL{time.monotonic_ns()}"
            body = pd_event("incident.triggered", incident, title=f"slow {sleep:g}")
            assert await a.deliver(session, body) == 202
            await _until(lambda: _creating(a), 120)
            b.start(lease_seconds=str(lease))
            await b.wait_ready(session)
            a.kill_machine()
            killed = time.monotonic()
            taken = finished = 0.0
            while not finished:
                job = await _job(jobs_url)
                if not taken and job["node"] == b.id:
                    taken = time.monotonic() - killed
                if job["status"] == "succeeded":
                    finished = time.monotonic() - killed
                assert job["status"] in ("running", "queued", "succeeded"), job
                assert time.monotonic() - killed < lease + 180, "no failover"
                await asyncio.sleep(0.1)
            return {"taken_over": taken, "finished": finished}
        finally:
            a.stop()
            b.stop()


async def _creating(node: Node) -> bool:
    return any(
        e.get("type") == "resource_pre_event" and "Slow" in str(e.get("resource_type"))
        for e in node.events("pulumi.engine")
    )


async def _until(check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def _job(url: str) -> dict[str, Any]:
    db = await asyncpg.connect(url)
    try:
        row = await db.fetchrow("SELECT status, node FROM jobs ORDER BY id LIMIT 1")
        return dict(row) if row else {"status": "running", "node": None}
    finally:
        await db.close()


def report(results: dict[float, list[dict[str, float]]], sleep: float, runs: int) -> str:
    lines = [
        f"## Failover (a node killed mid-`up` → its job finished by another node, {runs} run(s) each)",
        "",
        f"Command: `python -m bench.failover` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "Two nodes on one PostgreSQL 15 (jobs and Pulumi's `postgres://` state), real CLI; the "
        f"stack's one resource takes {sleep:g} s to create; every process of the first node is "
        "SIGKILLed while it creates it. Seconds from the kill; medians, spread min–max.",
        "",
        "| lease | taken over by the other node | job finished there | of which the re-run `up` and repair |",
        "|---|---|---|---|",
    ]
    for lease, runs_ in results.items():
        taken = [r["taken_over"] for r in runs_]
        done = [r["finished"] for r in runs_]
        rest = [r["finished"] - r["taken_over"] for r in runs_]
        lines.append(f"| {lease:g} s | {_cell(taken)} | {_cell(done)} | {_cell(rest)} |")
    return "\n".join(lines) + "\n"


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--leases", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--sleep", type=float, default=4.0, help="seconds the resource takes")
    args = parser.parse_args()
    server = PostgresServer()
    server.start()
    results: dict[float, list[dict[str, float]]] = {lease: [] for lease in args.leases}
    try:
        for run in range(args.runs):
            for lease in args.leases:
                with tempfile.TemporaryDirectory(prefix="responder-failover-") as root:
                    result = await one_run(server, Path(root), lease, args.sleep)
                results[lease].append(result)
                print(f"run {run} lease {lease:g}s: {result}", flush=True)
    finally:
        with contextlib.suppress(Exception):
            server.stop()
    print(report(results, args.sleep, args.runs))


if __name__ == "__main__":
    asyncio.run(main())
