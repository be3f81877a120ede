"""The runner's leases over real stores (SQLite; PostgreSQL for two live nodes) and the in-memory
stack operations: a job another node took over is stopped here and its result refused; a node that
cannot renew stops its jobs before the lease ends, then recovers them itself; a cancel made through
another node reaches the job."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from responder.events import Event, Incident
from responder.lifecycle import SYSTEM_PLAYBOOKS, reap_stack
from responder.logs import Redactor
from responder.playbook import Context, Playbook
from responder.runner import Runner
from responder.stacks import StackTarget
from responder.store import Job, JobStatus, NewDelivery, NewJob, Store, StoreUnavailable
from responder.store.postgres import PostgresStore
from responder.store.sqlite import SQLiteStore
from tests.fakes import FakeOperations, Gate
from tests.helpers import until

PROJECT = "leases"
PROGRAM = "tests.programs.slow:pulumi_program"
LEASE = 1.5  # seconds: rounds every 0.5 s


async def up(ctx: Context) -> None:
    await ctx.stack.up()


async def preview(ctx: Context) -> None:
    await ctx.stack.preview()


PLAYBOOKS = {
    p.name: p
    for p in (
        Playbook("up", up, [], project=PROJECT, program=PROGRAM),
        Playbook("preview", preview, [], project=PROJECT, program=PROGRAM),
    )
}

OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """SQLite stores on one file, each a node of its own (as after a restart)."""
    async with opener(lambda: SQLiteStore(tmp_path / "responder.db", lease=LEASE)) as open_one:
        yield open_one


@pytest.fixture
async def open_shared(postgres_url: str) -> AsyncIterator[OpenStore]:
    """PostgreSQL stores on one database: nodes that may all be alive at once."""
    async with opener(lambda: PostgresStore(postgres_url, lease=LEASE)) as open_one:
        yield open_one


@contextlib.asynccontextmanager
async def opener(make: Callable[[], Store]) -> AsyncIterator[OpenStore]:
    """`open_one()` opens another store made by `make`; all are closed at the end."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = make()
        await store.open()
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            await store.close()


@pytest.fixture
async def runners() -> AsyncIterator[list[Runner]]:
    made: list[Runner] = []
    yield made
    for runner in made:
        await runner.stop(grace=1)


def runner_on(store: Store, ops: FakeOperations, made: list[Runner], **options: Any) -> Runner:
    runner = Runner(
        store,
        ops,
        PLAYBOOKS,
        workers=2,
        job_timeout=30.0,
        retry_backoff=0.01,
        postmortem_dir=Path("postmortem"),
        redactor=Redactor(),
        **options,
    )
    made.append(runner)
    return runner


async def enqueue(store: Store, playbook: str, stack: str, max_attempts: int = 1) -> int:
    event = Event(
        id=f"e-{stack}-{playbook}",
        source="manual",
        type="manual.run",
        resource_type="manual",
        incident=Incident(id=f"Q{stack}"),
    )
    delivery = NewDelivery.of(
        event, id=f"d-{stack}-{playbook}", body=b"{}", received_at=time.time()
    )
    job = NewJob(playbook, PROJECT, stack, event, max_attempts)
    [job_id] = (await store.record_delivery(delivery, [job])).job_ids
    return job_id


async def get(store: Store, job_id: int) -> Job:
    job = await store.get_job(job_id)
    assert job is not None
    return job


async def started_job(
    store: Store, runners: list[Runner], max_attempts: int = 1
) -> tuple[Runner, FakeOperations, Gate, int]:
    """A started runner on `store` whose one job (an `up` of stack s1) is held inside its `up`."""
    ops = FakeOperations()
    gate = ops.gate("up")
    runner = runner_on(store, ops, runners)
    await runner.start()
    job_id = await enqueue(store, "up", "s1", max_attempts)
    runner.notify()
    async with asyncio.timeout(10):
        await gate.entered.wait()
    return runner, ops, gate, job_id


async def test_a_job_another_node_took_over_is_stopped_here(
    open_shared: OpenStore, runners: list[Runner]
) -> None:
    store, other = await open_shared(), await open_shared()
    runner, ops, _gate, job_id = await started_job(store, runners)
    # As if this node had stalled past its lease: the other takes the job over.
    [taken] = await other.take_over(time.time() + 2 * LEASE)
    assert taken.id == job_id and taken.node == other.node

    async def stopped_here() -> bool:
        return not runner._running  # the lease round found the lease lost and interrupted it

    await until(stopped_here, "the node stops the job whose lease it lost", 10)
    job = await get(store, job_id)
    assert job.status == JobStatus.RUNNING and job.node == other.node and job.fence == taken.fence
    assert job.steps == ()  # nothing recorded by the node that lost it
    # Its operation killed, the stack left as it was: repairing it is the new holder's business.
    assert ops.abandoned == [StackTarget("s1", PROJECT, PROGRAM)] and ops.recovered == []


async def test_a_node_that_lost_the_lease_cannot_record_the_result(
    open_shared: OpenStore, runners: list[Runner]
) -> None:
    store, other = await open_shared(), await open_shared()
    ops = FakeOperations()
    gate = ops.gate("up")
    runner = runner_on(store, ops, runners)  # not started: no lease rounds, only this one job
    job_id = await enqueue(store, "up", "s1")
    running = asyncio.create_task(runner.run_once())
    async with asyncio.timeout(10):
        await gate.entered.wait()
    [taken] = await other.take_over(time.time() + 2 * LEASE)
    gate.release.set()  # the operation succeeds, but the job is no longer this node's
    assert await running == job_id
    job = await get(store, job_id)
    assert job.status == JobStatus.RUNNING and job.fence == taken.fence, job
    assert job.steps == () and job.outputs is None
    await other.finish(job_id, JobStatus.FAILED, time.time(), error="taken", fence=taken.fence)
    assert (await get(store, job_id)).error == "taken"


async def test_a_node_that_cannot_renew_stops_its_jobs_in_time_then_recovers_them(
    open_shared: OpenStore, runners: list[Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_shared()
    runner, ops, gate, job_id = await started_job(store, runners, max_attempts=2)
    renew, take_over = store.renew_leases, store.take_over

    async def unreachable(*_args: Any) -> Any:
        raise StoreUnavailable("job store unavailable: test")

    monkeypatch.setattr(store, "renew_leases", unreachable)
    monkeypatch.setattr(store, "take_over", unreachable)

    async def stopped_here() -> bool:
        return not runner._running

    await until(stopped_here, "the node stops the job whose lease it lost", 10)
    # Well before the lease could expire and another node take it over: its processes killed at
    # once, the stack left for that node to repair.
    assert time.monotonic() - runner.leases._renewed < 0.8 * LEASE
    assert ops.abandoned == [StackTarget("s1", PROJECT, PROGRAM)] and ops.recovered == []
    assert runner.health.problem is not None and "leases" in runner.health.problem

    # The store is back: the worker is still there, and the job, its lease expired, is recovered.
    monkeypatch.setattr(store, "renew_leases", renew)
    monkeypatch.setattr(store, "take_over", take_over)
    other = await enqueue(store, "preview", "s2")
    runner.notify()
    gate.release.set()

    async def both_done() -> bool:
        return all([(await get(store, i)).status.final for i in (job_id, other)])

    await until(both_done, "both jobs done", 10)
    job = await get(store, job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2, job
    assert ops.recovered == [StackTarget("s1", PROJECT, PROGRAM)]
    assert (await get(store, other)).status == JobStatus.SUCCEEDED
    assert runner.health.problem is None


async def test_a_single_node_that_cannot_renew_goes_on(
    open_store: OpenStore, runners: list[Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: no other node could take the job over, so stopping it would protect nothing."""
    store = await open_store()
    runner, ops, gate, job_id = await started_job(store, runners)

    async def unreachable(*_args: Any) -> Any:
        raise StoreUnavailable("job store unavailable: test")

    monkeypatch.setattr(store, "renew_leases", unreachable)

    async def reported() -> bool:
        return runner.health.problem is not None

    await until(reported, "the lease renewal's failure reported", 10)
    await asyncio.sleep(LEASE)  # past the point where a shared store's node gives up
    assert runner._running and ops.abandoned == []
    monkeypatch.undo()
    gate.release.set()

    async def final() -> bool:
        return (await get(store, job_id)).status.final

    await until(final, "the job final", 10)
    job = await get(store, job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1, job


async def test_a_cancel_made_through_another_node_stops_the_job(
    open_shared: OpenStore, runners: list[Runner]
) -> None:
    store, other = await open_shared(), await open_shared()
    _runner, _ops, _gate, job_id = await started_job(store, runners)
    await other.request_cancel(job_id, time.time())  # the API of the node that does not run it

    async def final() -> bool:
        return (await get(store, job_id)).status.final

    await until(final, "the job final", 10)
    assert (await get(store, job_id)).status == JobStatus.CANCELLED


async def test_a_draining_node_keeps_its_jobs_leases_until_they_end(
    open_shared: OpenStore, runners: list[Runner]
) -> None:
    store = await open_shared()
    runner, _ops, gate, job_id = await started_job(store, runners)
    stopping = asyncio.create_task(runner.stop(grace=3 * LEASE))
    await asyncio.sleep(1.5 * LEASE)  # longer than the lease: only renewals keep it
    job = await get(store, job_id)
    assert job.status == JobStatus.RUNNING
    assert job.lease_expires_at is not None and job.lease_expires_at > time.time(), job
    gate.release.set()
    await stopping
    assert (await get(store, job_id)).status == JobStatus.SUCCEEDED


async def test_a_recovery_whose_lease_is_lost_is_stopped_here(
    open_shared: OpenStore, runners: list[Runner]
) -> None:
    """A node recovering a dead node's job that then loses the lease (it stalled; the job is taken
    over again) stops the recovery, its operation killed: left to go on, its repair would clear the
    Pulumi lock under the next holder's operation."""
    dead, store, other = await open_shared(), await open_shared(), await open_shared()
    job_id = await enqueue(dead, "up", "s1", max_attempts=2)
    assert (await dead.claim_next(time.time())) is not None  # then its node dies
    ops = FakeOperations()
    gate = ops.gate("recover")
    runner = runner_on(store, ops, runners)
    await runner.start()
    async with asyncio.timeout(10):  # after the dead node's lease, this node recovers the job
        await gate.entered.wait()
    [taken] = await other.take_over(time.time() + 2 * LEASE)  # as if this node had stalled
    assert taken.id == job_id

    async def stopped_here() -> bool:
        return not runner.leases.recoveries and not runner._recoveries

    await until(stopped_here, "the node stops the recovery whose lease it lost", 10)
    assert ops.abandoned == [StackTarget("s1", PROJECT, PROGRAM)]
    gate.release.set()
    await asyncio.sleep(LEASE)  # nothing more from this node: no retry written, no run
    job = await get(store, job_id)
    assert job.status == JobStatus.RUNNING and job.fence == taken.fence, job
    assert job.node == other.node and job.error is None and ops.ops() == []


async def test_a_system_job_waiting_for_its_stacks_record_is_stopped_when_its_lease_is_lost(
    open_shared: OpenStore, runners: list[Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reap job looks its stack's program up in the store before it has a stack to stop; a node
    whose lease is lost meanwhile stops it there, not only once it runs an operation."""
    store, other = await open_shared(), await open_shared()
    looked_up = asyncio.Event()

    async def never_answers(*_args: Any) -> Any:
        looked_up.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(store, "get_stack", never_answers)
    ops = FakeOperations()
    runner = runner_on(store, ops, runners)
    runner.playbooks = {**PLAYBOOKS, **{p.name: p for p in SYSTEM_PLAYBOOKS}}
    await runner.start()
    job_id = await enqueue(store, reap_stack.name, "s1")
    runner.notify()
    async with asyncio.timeout(10):
        await looked_up.wait()
    [taken] = await other.take_over(time.time() + 2 * LEASE)
    assert taken.id == job_id

    async def stopped_here() -> bool:
        return not runner._running

    await until(stopped_here, "the node stops the job whose lease it lost", 10)
    assert ops.ops() == [] and ops.abandoned == []  # no operation had started
    assert (await get(store, job_id)).fence == taken.fence


async def test_a_recovery_in_line_at_start_whose_lease_is_lost_never_begins(
    open_shared: OpenStore, runners: list[Runner]
) -> None:
    """At start the jobs taken over are recovered one after another, each held meanwhile: one
    whose lease is lost while it waits its turn is dropped, not repaired under its next holder."""
    dead, store, other = await open_shared(), await open_shared(), await open_shared()
    first, second = await enqueue(dead, "up", "s1", 2), await enqueue(dead, "up", "s2", 2)
    for _ in (first, second):
        assert (await dead.claim_next(time.time())) is not None  # then its node dies
    await asyncio.sleep(LEASE)
    ops = FakeOperations()
    gate = ops.gate("recover")
    runner = runner_on(store, ops, runners)
    starting = asyncio.create_task(runner.start())
    async with asyncio.timeout(10):
        await gate.entered.wait()  # the first recovery, held; the second waits its turn
    assert len(ops.recovered) == 1
    taken = await other.take_over(time.time() + 2 * LEASE)  # as if this node had stalled
    assert {job.id for job in taken} == {first, second}

    async def both_dropped() -> bool:
        return not runner.leases.fences

    await until(both_dropped, "the node lets both jobs go", 10)
    gate.release.set()
    await asyncio.wait_for(starting, 10)
    assert len(ops.recovered) == 1  # the second never began
    for job_id in (first, second):
        job = await get(store, job_id)
        assert job.node == other.node and job.status == JobStatus.RUNNING and job.error is None
