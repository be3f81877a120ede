"""A claim's cost with jobs queued behind a busy stack, against another checkout.

    .venv/bin/python -m bench.claims --against /tmp/base    # a checkout of the baseline commit
    git worktree add --detach /tmp/base <rev>                # one way to make that checkout

For each store (SQLite; PostgreSQL with production durability, a fresh database each run) and each
backlog n: one job runs on stack `busy`, n more are recorded behind it through the store's own
`record_deliveries` (250 a call, as the intake's group commit records them), then `claim_next` is
timed while nothing else is queued: the claim an idle worker makes each time a delivery wakes it.
The figure is the median of 20 such claims; a run does every backlog, in a child process whose
imports are the checkout's. The two checkouts take turns, the order rotating from run to run.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.common import REPO
from bench.intake import postgres_cluster
from tests.postgres_server import PostgresServer

CLAIMS = 20  # timed claims a backlog

# Run in the checkout measured, as `python -c CHILD store url backlog...`.
CHILD = """
import asyncio, json, statistics, sys, time
from tests.test_store_contract import NOW, delivery, job

async def main(kind, where, backlogs):
    if kind == "postgres":
        from responder.store.postgres import PostgresStore
        store = PostgresStore(where)
    else:
        from responder.store.sqlite import SQLiteStore
        from pathlib import Path
        store = SQLiteStore(Path(where))
    await store.open()
    try:
        await store.record_delivery(delivery("QBUSY"), [job("busy")])
        assert await store.claim_next(NOW) is not None
        recorded, medians = 0, {}
        for backlog in backlogs:
            while recorded < backlog:
                count = min(250, backlog - recorded)
                batch = [(delivery(f"QB{recorded + i}"), [job("busy")]) for i in range(count)]
                await store.record_deliveries(batch)
                recorded += count
            times = []
            for _ in range(CLAIMS):
                started = time.perf_counter()
                assert await store.claim_next(NOW) is None
                times.append(time.perf_counter() - started)
            medians[backlog] = statistics.median(times) * 1000
        print(json.dumps(medians))
    finally:
        await store.close()

CLAIMS = int(sys.argv[3])
asyncio.run(main(sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[4:]]))
"""


def one_run(checkout: Path, kind: str, where: str, backlogs: list[int]) -> dict[int, float]:
    argv = [sys.executable, "-c", CHILD, kind, where, str(CLAIMS), *map(str, backlogs)]
    done = subprocess.run(argv, cwd=checkout, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: {done.stderr[-2000:]}")
    return {int(n): ms for n, ms in json.loads(done.stdout).items()}


def where_to(kind: str, cluster: PostgresServer | None, tmp: Path, name: str) -> str:
    if kind == "sqlite":
        return str(tmp / f"{name}.db")
    assert cluster is not None
    import asyncio

    import asyncpg

    async def create() -> None:
        admin = await asyncpg.connect(cluster.url())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    asyncio.run(create())
    return cluster.url(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="the baseline checkout")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backlog", type=int, nargs="+", default=[0, 2000, 20000])
    args = parser.parse_args()
    checkouts = {"this": REPO, "baseline": args.against.resolve()}
    results: dict[tuple[str, str], list[dict[int, float]]] = {}
    with ExitStack() as stack:
        cluster = stack.enter_context(postgres_cluster())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-claims-")))
        for run in range(args.runs):
            order = list(checkouts) if run % 2 == 0 else list(reversed(checkouts))
            for kind in ("sqlite", "postgres"):
                for name in order:
                    where = where_to(kind, cluster, tmp, f"{name}_{kind}_{run}")
                    got = one_run(checkouts[name], kind, where, args.backlog)
                    results.setdefault((kind, name), []).append(got)
                    print(f"run {run + 1} {kind} {name}: {got}", file=sys.stderr)
    print(f"Empty claim (ms, median of {CLAIMS} claims, then of {args.runs} runs) with a backlog")
    print("queued behind one running stack; ratio: baseline / this, run by run.\n")
    print("| store | backlog | this | baseline | baseline / this (spread) |")
    print("|---|---|---|---|---|")
    for kind in ("sqlite", "postgres"):
        for backlog in args.backlog:
            this = [r[backlog] for r in results[(kind, "this")]]
            base = [r[backlog] for r in results[(kind, "baseline")]]
            ratios = [b / t for b, t in zip(base, this, strict=True)]
            print(
                f"| {kind} | {backlog:,} | {statistics.median(this):.2f} |"
                f" {statistics.median(base):.2f} | {statistics.median(ratios):.1f}×"
                f" ({min(ratios):.1f}–{max(ratios):.1f}) |"
            )


if __name__ == "__main__":
    main()
