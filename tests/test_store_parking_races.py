"""PostgreSQL: scripted interleavings of what parking locks (READ COMMITTED), none a deadlock.

The trigger `jobs_unpark_next` updates a parked job of a stack in the transaction of whatever moves
a job of it out of queued/running; a running job's end and the intake take the stack's advisory key.
Each test lines two transactions up the way a first version of parking deadlocked them (the store
retries a deadlock's loser, so the calls succeeded a deadlock_timeout, 1 s, later; under contention
they could run out of tries), asserts PostgreSQL found no deadlock, and that nothing stalled.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from responder.store import DeliveryStatus, JobStatus, NewDelivery, NewJob
from responder.store.postgres import PostgresStore
from responder.store.postgres import deliveries as postgres_deliveries
from tests.helpers import bare_event
from tests.postgres_server import PostgresServer, fresh_database

NOW = 1_800_000_000.0
_n = iter(range(1, 10**6))


def delivery(incident: str) -> NewDelivery:
    n = next(_n)
    return NewDelivery(
        id=f"d-{n}", source="pagerduty", event_id=f"e-{n}", event_type="incident.annotated",
        incident_id=incident, status=DeliveryStatus.ACCEPTED, body=b"{}", received_at=NOW,
    )  # fmt: skip


def job(stack: str, *, coalesce: bool = False, playbook: str = "pb") -> NewJob:
    return NewJob(
        playbook=playbook, project="proj", stack=stack, event=bare_event(), max_attempts=3,
        coalesce=coalesce,
    )  # fmt: skip


async def enqueue(store: PostgresStore, *jobs: NewJob, incident: str = "I") -> list[int]:
    return (await store.record_delivery(delivery(incident), list(jobs))).job_ids


@pytest.fixture
def server(postgres_server: PostgresServer) -> PostgresServer:
    return postgres_server


@contextlib.asynccontextmanager
async def two_nodes(
    server: PostgresServer,
) -> AsyncIterator[tuple[PostgresStore, PostgresStore, asyncpg.Connection]]:
    async with fresh_database(server) as url:
        stores = [PostgresStore(url, node=f"node-{x}") for x in "AB"]
        for store in stores:
            await store.open()
        db = await asyncpg.connect(url)
        try:
            yield stores[0], stores[1], db
        finally:
            await db.close()
            for store in stores:
                await store.close()


def deadlocks_logged(server: PostgresServer) -> int:
    return server.log.read_text().count("deadlock detected")


async def parked(db: asyncpg.Connection) -> dict[int, bool]:
    return {
        r["id"]: r["parked"]
        for r in await db.fetch("SELECT id, parked FROM jobs WHERE status = 'queued' ORDER BY id")
    }


def test_two_cancels_of_parked_jobs_do_not_deadlock(server: PostgresServer) -> None:
    """Stack a runs R; P1, P2 are parked behind it. Two cancels (two nodes, or two API requests)
    each lock their own job, and the trigger of each then updates the other's: the first parked
    job but its own. Before parking, two cancels of two jobs never waited on each other."""

    async def go() -> tuple[int, float, dict[int, bool]]:
        async with two_nodes(server) as (a, b, db):
            await enqueue(a, job("a"))
            running = await a.claim_next(NOW)
            assert running is not None
            p1, p2, p3 = await enqueue(a, job("a"), job("a"), job("a"), incident="J")
            assert await parked(db) == {p1: True, p2: True, p3: True}
            before = deadlocks_logged(server)
            blocker = db.transaction()  # lines both cancels up behind one lock
            await blocker.start()
            await db.execute("SELECT 1 FROM jobs WHERE id = ANY($1) FOR UPDATE", [p1, p2])
            cancels = [
                asyncio.create_task(a.request_cancel(p1, NOW)),
                asyncio.create_task(b.request_cancel(p2, NOW)),
            ]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await blocker.commit()
            done = await asyncio.gather(*cancels)
            elapsed = time.monotonic() - started
            assert [j.status if j else None for j in done] == [JobStatus.CANCELLED] * 2
            await a.finish(running.id, JobStatus.SUCCEEDED, NOW, fence=running.fence)
            taken = await a.claim_next(NOW)
            assert taken is not None and taken.id == p3  # nothing stalled
            assert await a.unpark_stalled() == []
            await asyncio.sleep(0.2)  # the log is written by the server
            return deadlocks_logged(server) - before, elapsed, {}

    found, elapsed, _ = asyncio.run(go())
    assert found == 0, f"{found} deadlock(s); the two cancels took {elapsed:.2f} s"


def test_a_group_commit_and_a_lease_renewal_do_not_deadlock(server: PostgresServer) -> None:
    """Node A runs R_a and R_b. An intake transaction (group commit, two waves: two deliveries of one
    incident) records a job for stack b, then one for stack a. A's renewal, in between, updates R_a
    then R_b. A first version of parking read R_b, then R_a, FOR SHARE: the two deadlocked."""

    async def go() -> tuple[int, float, str]:
        async with two_nodes(server) as (a, _b, db):
            rb, ra = await enqueue(a, job("b"), job("a"))
            first, second = await a.claim_next(NOW), await a.claim_next(NOW)
            assert first is not None and second is not None and (first.id, second.id) == (rb, ra)
            before = deadlocks_logged(server)
            intake = db.transaction()
            await intake.start()
            await postgres_deliveries.record_requests(db, [[(delivery("K"), [job("b")])]])
            renewal = asyncio.create_task(
                a.renew_leases({rb: first.fence, ra: second.fence}, NOW + 1)
            )
            await asyncio.sleep(0.3)
            assert renewal.done()  # the intake locks no running job: nothing to wait for
            started = time.monotonic()
            loser = "renewal"
            try:
                await postgres_deliveries.record_requests(db, [[(delivery("K"), [job("a")])]])
            except asyncpg.DeadlockDetectedError:
                loser = "intake (the whole group commit would run again)"
                await intake.rollback()
            else:
                await asyncio.sleep(0.2)
                await intake.commit()
            assert await renewal == set()
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.2)
            return deadlocks_logged(server) - before, elapsed, loser

    found, elapsed, loser = asyncio.run(go())
    assert found == 0, f"{found} deadlock(s), aborted: {loser}; {elapsed:.2f} s"


def test_a_coalescing_delivery_and_a_cancel_do_not_deadlock(server: PostgresServer) -> None:
    """Stack a runs R; parked behind it: C (coalescing, playbook x), then P. A delivery with a
    coalescing job of x supersedes C, and C's trigger updates the first parked job but C: P. A
    cancel of P (its row locked first, as request_cancel does) fires its trigger at the first
    parked job but P: C. A third session holding C lines the two up. Before parking, the cancel
    of P and the supersede of C touched one row each."""

    async def go() -> tuple[int, float, str]:
        async with two_nodes(server) as (a, b, db):
            await enqueue(a, job("a"))
            running = await a.claim_next(NOW)
            assert running is not None
            c, p = await enqueue(a, job("a", coalesce=True, playbook="x"), job("a"), incident="J")
            assert await parked(db) == {c: True, p: True}
            before = deadlocks_logged(server)
            blocker = db.transaction()
            await blocker.start()
            await db.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", c)
            recorded = asyncio.create_task(
                a.record_delivery(delivery("K"), [job("a", coalesce=True, playbook="x")])
            )
            await asyncio.sleep(0.3)  # its SUPERSEDE waits for C
            cancel = asyncio.create_task(
                b.request_cancel(p, NOW)
            )  # locks P, its trigger waits for C
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await blocker.commit()
            outcome, cancelled = await asyncio.gather(recorded, cancel)
            elapsed = time.monotonic() - started
            assert outcome.created and cancelled is not None
            assert cancelled.status == JobStatus.CANCELLED
            await a.finish(running.id, JobStatus.SUCCEEDED, NOW, fence=running.fence)
            taken = await a.claim_next(NOW)
            assert taken is not None and taken.id == outcome.job_ids[0]  # nothing stalled
            assert await a.unpark_stalled() == []
            await asyncio.sleep(0.2)
            return deadlocks_logged(server) - before, elapsed, ""

    found, elapsed, _ = asyncio.run(go())
    assert found == 0, f"{found} deadlock(s); {elapsed:.2f} s"
