"""What drawing the web page's overview costs: the store reads of `data.overview`, old and new.

`python -m bench.ui_overview [N ...]` fills a temporary SQLite store with N jobs through the store's
own intake (one delivery and one job each; most incidents have 3 jobs; one noisy incident has
min(5000, N/4) jobs, either every 4th of the newest ones or the newest ones in a row), finishes them
with two steps each (direct SQL, for speed), then times the overview as it was (kept below:
offset-probing for the newest 500 jobs, and each incident's whole record) against the current one,
alternating, and prints the medians and how many incidents each listed.
"""

import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from responder.events import Event, Incident, Reference
from responder.store import (
    Caps,
    DeliveryStatus,
    IncidentRecord,
    Job,
    JobStatus,
    NewDelivery,
    NewJob,
    StackRecord,
    StackStatus,
    Store,
)
from responder.store.sqlite import SQLiteStore
from responder.web.ui import data

SIZES = (2_000, 50_000, 200_000)
RUNS = 7
NOISY_JOBS = 5_000
NOW = 1_800_000_000.0


# -- the overview before the store had newest-first listing and incident summaries ---------------


async def old_newest_jobs(store: Store, count: int) -> list[Job]:
    if not await store.list_jobs(limit=1, offset=0):
        return []
    low, high = 0, 1
    while await store.list_jobs(limit=1, offset=high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if await store.list_jobs(limit=1, offset=middle):
            low = middle
        else:
            high = middle
    start = max(0, high - count)
    return list(reversed(await store.list_jobs(limit=high - start, offset=start)))


def old_incident_row(record: IncidentRecord) -> data.IncidentRow:
    described = [j.event.incident for j in record.jobs if j.event.incident is not None]
    full = [i for i in described if not i.partial] or described
    latest = full[-1] if full else None
    service = latest.service if latest else None
    sources = list(dict.fromkeys([d.source for d in record.deliveries]))
    return data.IncidentRow(
        id=record.id,
        title=latest.title if latest else "",
        status=record.status.value if record.status else "not reported",
        sources=sources or list(dict.fromkeys(j.event.source for j in record.jobs)),
        service=(service.summary or service.id) if service else "",
        jobs=list(reversed(record.jobs[-data.JOBS_PER_INCIDENT :])),
        older_jobs=max(0, len(record.jobs) - data.JOBS_PER_INCIDENT),
        stacks=list(record.stacks),
    )


async def old_overview(store: Store, now: float) -> data.Overview:
    recent = await old_newest_jobs(store, 500)
    records = await store.list_stacks()
    order = list(dict.fromkeys([j.incident_id for j in recent] + [r.incident_id for r in records]))
    incidents = []
    for incident_id in order[: data.MAX_INCIDENTS]:
        record = await store.incident(incident_id)
        if record is not None:
            incidents.append(old_incident_row(record))
    waiting = await store.list_jobs(status=JobStatus.AWAITING_APPROVAL, limit=data.MAX_WAITING)
    active = any([await store.list_jobs(status=s, limit=1) for s in data.ACTIVE])
    return data.Overview(
        incidents=incidents,
        stacks=[data.stack_row(r, now) for r in records],
        waiting=waiting,
        active=active,
        plans={j.id: data.plan_steps(j) for j in waiting},
    )


# -- the data -------------------------------------------------------------------------------------


def event(incident_id: str, n: int, kind: str) -> Event:
    service = Reference(id="PSVC", type="service_reference", summary="checkout")
    incident = Incident(id=incident_id, title=f"disk full on db-{n % 7}", service=service)
    return Event(
        id=f"e-{n}",
        source="pagerduty",
        type=kind,
        resource_type="incident",
        incident=incident,
    )


def incident_of(i: int, total: int, layout: str) -> str:
    """Job `i`'s incident. Most come in 3s; the noisy one takes every 4th of the newest jobs
    (`mixed`), or all the newest ones in a row (`burst`: a flapping alert)."""
    noisy = min(NOISY_JOBS, total // 4)
    if layout == "burst" and i >= total - noisy:
        return "QNOISY"
    if layout == "mixed" and i >= total - 4 * noisy and i % 4 == 0:
        return "QNOISY"
    return f"Q{i // 3}"


async def fill(path: Path, total: int, layout: str) -> None:
    store = SQLiteStore(path)
    await store.open()
    try:
        batch: list[tuple[NewDelivery, list[NewJob]]] = []
        seen: set[str] = set()
        for i in range(total):
            incident_id = incident_of(i, total, layout)
            # A second trigger for an open incident is a repeat (no job): later events annotate it.
            kind = "incident.annotated" if incident_id in seen else "incident.triggered"
            seen.add(incident_id)
            ev = event(incident_id, i, kind)
            delivery = NewDelivery.of(
                ev, id=f"d-{i}", body=b"{}", received_at=NOW + i, status=DeliveryStatus.ACCEPTED
            )
            job = NewJob("noop", "proj", f"s-{incident_id}", ev, max_attempts=1)
            batch.append((delivery, [job]))
            if len(batch) == 500 or i == total - 1:
                await store.record_deliveries(batch)
                batch = []
        for n in range(3):  # a few live stacks, as the page lists them
            record = StackRecord(
                "proj",
                f"live-{n}",
                "prog",
                f"Q{n}",
                "noop",
                "checkout",
                StackStatus.LIVE,
                NOW,
                NOW,
                "up",
            )
            await store.reserve_stack(record, Caps())
    finally:
        await store.close()
    with sqlite3.connect(path) as db:  # finished, with two steps each, but the newest
        db.execute(
            "UPDATE jobs SET status = 'succeeded', started_at = created_at,"
            " finished_at = created_at + 1 WHERE id <= ?",
            (total - 5,),
        )
        db.executemany(
            "INSERT INTO steps (job_id, step, started_at, duration_ms, outcome, changes)"
            " VALUES (?, ?, ?, 100.0, 'succeeded', '{\"create\": 1}')",
            ((i, step, NOW + i) for i in range(1, total - 4) for step in ("up", "destroy")),
        )


# -- timing ---------------------------------------------------------------------------------------


Overview = Callable[[Store, float], Awaitable[data.Overview]]


async def timed(store: Store, overview: Overview) -> tuple[float, float, data.Overview]:
    """Wall-clock and CPU milliseconds (the process's, the store's thread included: less swayed
    by other work on a shared machine) of one overview."""
    start, cpu = time.perf_counter(), time.process_time()
    view = await overview(store, NOW)
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000, view


async def measure(total: int, layout: str) -> tuple[dict[str, float], dict[str, int]]:
    """Median wall and CPU milliseconds per overview, and how many incidents it listed, old and new."""
    shown: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "responder.db"
        await fill(path, total, layout)
        store = SQLiteStore(path)
        await store.open()
        try:
            times: dict[str, list[float]] = {"old": [], "new": [], "old cpu": [], "new cpu": []}
            for run in range(RUNS + 1):
                for name, overview in (("old", old_overview), ("new", data.overview)):
                    ms, cpu, view = await timed(store, overview)
                    if run:  # the first run of each warms the page cache
                        times[name].append(ms)
                        times[f"{name} cpu"].append(cpu)
                    shown[name] = len(view.incidents)
        finally:
            await store.close()
    return {name: statistics.median(values) for name, values in times.items()}, shown


async def main(sizes: tuple[int, ...]) -> None:
    print(f"Median of {RUNS} runs, ms per overview (SQLite, one store connection).\n")
    print(
        "| noisy incident | jobs | before ms (CPU) | after ms (CPU) | before / after (CPU)"
        " | incidents listed |"
    )
    print("|---|---|---|---|---|---|")
    for layout in ("mixed", "burst"):
        for total in sizes:
            ms, shown = await measure(total, layout)
            print(
                f"| {layout} | {total} | {ms['old']:.1f} ({ms['old cpu']:.1f})"
                f" | {ms['new']:.1f} ({ms['new cpu']:.1f})"
                f" | {ms['old cpu'] / ms['new cpu']:.0f}× | {shown['old']} → {shown['new']} |",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main(tuple(int(a) for a in sys.argv[1:]) or SIZES))
