"""The job store contract, run against every `Store` implementation (no CLI: fast).

Each test speaks only the `Store` protocol, so a second implementation joins by adding a factory.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from responder.store import DeliveryStatus, JobStatus, NewDelivery, NewJob, StepRecord, Store
from responder.store.sqlite import SQLiteStore
from tests.helpers import bare_event

NOW = 1_800_000_000.0

StoreFactory = Callable[[Path], Awaitable[Store]]


async def sqlite_store(tmp_path: Path) -> Store:
    store = SQLiteStore(tmp_path / "responder.db")
    await store.open()
    return store


@pytest.fixture(params=[sqlite_store], ids=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    factory: StoreFactory = request.param
    store = await factory(tmp_path)
    yield store
    await store.close()


_counter = iter(range(1, 1_000_000))


def delivery(
    incident: str = "QINC", event_type: str = "incident.triggered", *, at: float = NOW
) -> NewDelivery:
    n = next(_counter)
    return NewDelivery(
        id=f"d-{n}",
        source="pagerduty",
        event_id=f"e-{n}",
        event_type=event_type,
        incident_id=incident,
        status=DeliveryStatus.ACCEPTED,
        body=b"{}",
        received_at=at,
    )


def job(stack: str = "s1", playbook: str = "pb", **options: object) -> NewJob:
    return NewJob(
        playbook=playbook,
        project="proj",
        stack=stack,
        event=bare_event(),
        max_attempts=3,
        **options,  # type: ignore[arg-type]
    )


async def enqueue(store: Store, *jobs: NewJob, **kw: object) -> list[int]:
    recorded = await store.record_delivery(delivery(**kw), list(jobs))  # type: ignore[arg-type]
    return recorded.job_ids


async def test_claims_follow_arrival_order_one_job_per_stack(store: Store) -> None:
    a1, b1 = await enqueue(store, job("a"), job("b"), incident="QA")
    (a2,) = await enqueue(store, job("a"), incident="QA2")
    first = await store.claim_next(NOW)
    second = await store.claim_next(NOW)
    assert first is not None and second is not None
    assert (first.id, second.id) == (a1, b1)
    assert await store.claim_next(NOW) is None  # a2 waits: a1 still runs on stack a
    await store.finish(a1, JobStatus.SUCCEEDED, NOW)
    third = await store.claim_next(NOW)
    assert third is not None and third.id == a2
    assert third.status == JobStatus.RUNNING and third.attempts == 1


async def test_a_retry_waits_in_its_place_until_due(store: Store) -> None:
    first, later = await enqueue(store, job("a"), job("a"))
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == first
    await store.retry_later(first, NOW + 30, "transient")
    assert await store.claim_next(NOW) is None  # neither the retry nor the job behind it
    assert await store.next_due() == NOW + 30
    again = await store.claim_next(NOW + 30)
    assert again is not None and again.id == first and again.attempts == 2
    await store.finish(first, JobStatus.SUCCEEDED, NOW + 31)
    behind = await store.claim_next(NOW + 31)
    assert behind is not None and behind.id == later


async def test_a_delayed_job_is_scheduled_until_its_time(store: Store) -> None:
    (scheduled,) = await enqueue(store, job(delay=300.0))
    stored = await store.get_job(scheduled)
    assert stored is not None and stored.status == JobStatus.SCHEDULED
    assert await store.claim_next(NOW + 299) is None
    assert await store.next_due() == NOW + 300
    claimed = await store.claim_next(NOW + 300)
    assert claimed is not None and claimed.id == scheduled


async def test_a_listed_event_cancels_a_scheduled_job_of_its_incident(store: Store) -> None:
    await enqueue(store, job(), incident="QC", event_type="incident.triggered")
    (destroy,) = await enqueue(
        store,
        job(delay=300.0, cancel_on=("incident.reopened",)),
        incident="QC",
        event_type="incident.resolved",
    )
    await enqueue(store, incident="QOTHER", event_type="incident.reopened")
    stored = await store.get_job(destroy)
    assert stored is not None and stored.status == JobStatus.SCHEDULED  # another incident's event
    await enqueue(store, incident="QC", event_type="incident.reopened")
    stored = await store.get_job(destroy)
    assert stored is not None and stored.status == JobStatus.CANCELLED


async def test_queued_coalescing_runs_collapse_into_the_newest(store: Store) -> None:
    (running,) = await enqueue(store, job(coalesce=True))
    assert (await store.claim_next(NOW)) is not None
    waiting = [
        (await enqueue(store, job(coalesce=True), event_type="incident.acknowledged"))[0]
        for _ in range(3)
    ]
    jobs = {j.id: j for j in await store.list_jobs(limit=10)}
    assert jobs[running].status == JobStatus.RUNNING  # a running job is never superseded
    assert [jobs[i].status for i in waiting] == [
        JobStatus.COALESCED,
        JobStatus.COALESCED,
        JobStatus.QUEUED,
    ]
    # Each newer run supersedes the one queued before it: the chain ends at the run that works.
    assert [jobs[i].coalesced_into for i in waiting] == [waiting[1], waiting[2], None]


async def test_a_redelivery_creates_nothing(store: Store) -> None:
    original = delivery("QR")
    first = await store.record_delivery(original, [job()])
    again = await store.record_delivery(original, [job()])
    assert first.created and len(first.job_ids) == 1
    assert not again.created and again.job_ids == []
    assert len(await store.list_jobs(limit=10)) == 1


async def test_a_trigger_for_an_open_incident_is_a_repeat(store: Store) -> None:
    await enqueue(store, job(), incident="QO")
    repeat = await store.record_delivery(delivery("QO"), [job()])
    assert repeat.created and repeat.job_ids == [] and repeat.status == "deduplicated"
    await enqueue(store, incident="QO", event_type="incident.resolved")
    reopened = await store.record_delivery(delivery("QO"), [job()])
    assert len(reopened.job_ids) == 1


async def test_concurrent_deliveries_all_commit(store: Store) -> None:
    results = await asyncio.gather(
        *(store.record_delivery(delivery(f"QP{i}"), [job(f"s{i}")]) for i in range(50))
    )
    assert all(r.created and len(r.job_ids) == 1 for r in results)
    assert len({r.job_ids[0] for r in results}) == 50
    assert len(await store.list_jobs(limit=100)) == 50


async def test_running_jobs_are_what_recovery_sees(store: Store) -> None:
    a, b = await enqueue(store, job("a"), job("b"))
    claimed = await store.claim_next(NOW)
    assert claimed is not None
    await store.add_step(claimed.id, StepRecord("up", NOW, 12.5, "succeeded", None, {"create": 1}))
    assert [j.id for j in await store.running_jobs()] == [a]
    stored = await store.get_job(a)
    assert stored is not None and [s.step for s in stored.steps] == ["up"]
    await store.retry_later(a, NOW, "interrupted")
    assert await store.running_jobs() == []
    again = await store.claim_next(NOW)
    assert again is not None and again.id == a  # back first in line for its stack, before b
    assert b != a


async def test_cancel_ends_a_waiting_job_and_flags_a_running_one(store: Store) -> None:
    running, waiting = await enqueue(store, job("a"), job("b", delay=60.0))
    assert (await store.claim_next(NOW)) is not None
    cancelled = await store.request_cancel(waiting, NOW)
    flagged = await store.request_cancel(running, NOW)
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert flagged is not None and flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    assert await store.request_cancel(999_999, NOW) is None


async def test_approval_puts_a_job_back_first_in_line(store: Store) -> None:
    gated, behind = await enqueue(store, job("a"), job("a"))
    assert (await store.claim_next(NOW)) is not None
    await store.await_approval(gated, {"operation": "destroy", "steps": []}, NOW)
    # Waiting for a person does not hold the stack: the next job runs meanwhile.
    meanwhile = await store.claim_next(NOW)
    assert meanwhile is not None and meanwhile.id == behind
    await store.finish(behind, JobStatus.SUCCEEDED, NOW)
    (later,) = await enqueue(store, job("a"), incident="QLATER")
    assert await store.expired_approvals(NOW) == [gated]
    decided = await store.decide(gated, True, NOW)
    assert decided is not None and decided.status == JobStatus.QUEUED
    assert decided.approved_plan == {"operation": "destroy", "steps": []}
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == gated  # ahead of the job queued after it
    assert later > gated
