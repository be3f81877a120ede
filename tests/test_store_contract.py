"""The job store contract, run against every `Store` implementation (no CLI: fast).

Each test speaks the `Store` protocol, plus a small `Harness` each implementation provides: reopen
the same data (recovery), open a second store on it (another process or node), and a hook into its
delivery commits (group commit). An implementation joins by adding a harness to the `harness` fixture.
SQLite's runs everywhere; PostgreSQL's on the session's throw-away cluster, a fresh database each.
"""

import asyncio
import contextlib
import dataclasses
import inspect
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from responder.store import (
    Caps,
    DeliveryStatus,
    IncidentStatus,
    Job,
    JobStatus,
    LeaseLost,
    NewDelivery,
    NewJob,
    NextClaim,
    RecordedDelivery,
    RecordRejected,
    StackRecord,
    StackStatus,
    StepRecord,
    Store,
    StoreUnavailable,
)
from responder.store.group_commit import Outcome
from responder.store.limits import MAX_KEY_BYTES
from responder.store.postgres import PostgresStore
from responder.store.postgres import deliveries as postgres_deliveries
from responder.store.postgres.driver import Db
from responder.store.sqlite import SQLiteStore
from responder.store.sqlite import deliveries as sqlite_deliveries
from responder.store.sqlite import queue as sqlite_queue
from responder.store.sqlite.process import SQLiteProcessStore
from responder.store.sqlite.schema import ensure_schema
from tests.helpers import bare_event
from tests.postgres_server import fresh_database

NOW = 1_800_000_000.0

# Called at the start of each delivery commit with its number of requests, on whatever thread the
# store commits from (it may block); raising fails that commit.
CommitHook = Callable[[int], None]
Outcomes = list[Outcome]


@dataclass
class Harness:
    store: Store
    reopen: Callable[[], Awaitable[Store]]  # close `store`, open the same data again
    on_commit: Callable[[CommitHook], None]
    another: Callable[[], Awaitable[Store]]  # a second store on the same data, not yet opened
    # Whether concurrent deliveries share one commit (both stores' group commit), or each request
    # commits alone.
    group_commit: bool = True
    # Whether one process at a time uses the data (SQLite): another node's running jobs are then an
    # earlier life's, taken over at once.
    one_process: bool = True


async def sqlite_harness(
    request: pytest.FixtureRequest, tmp_path: Path, *, process: bool = False
) -> Harness:
    """The SQLite store in this process, or (`process`) in a store process of its own, as the
    daemon runs it."""
    path = tmp_path / "responder.db"
    monkeypatch = request.getfixturevalue("monkeypatch")

    def new() -> Store:
        return SQLiteProcessStore(path).as_store() if process else SQLiteStore(path)

    async def open_store() -> Store:
        store = new()
        await store.open()
        return store

    async def another() -> Store:
        return new()

    async def reopen() -> Store:
        await made.store.close()
        made.store = await open_store()
        return made.store

    def on_commit(hook: CommitHook) -> None:
        assert not process, "the hook would be set in this process, not the store's"
        record = sqlite_deliveries.record_requests

        def hooked(
            db: sqlite3.Connection, requests: Sequence[sqlite_deliveries.Request]
        ) -> Outcomes:
            hook(len(requests))  # called once per commit
            return record(db, requests)

        monkeypatch.setattr(sqlite_deliveries, "record_requests", hooked)

    made = Harness(await open_store(), reopen, on_commit, another)
    return made


async def postgres_harness(request: pytest.FixtureRequest, url: str) -> Harness:
    monkeypatch = request.getfixturevalue("monkeypatch")

    async def open_store() -> Store:
        store = PostgresStore(url)
        await store.open()
        return store

    async def reopen() -> Store:
        await made.store.close()
        made.store = await open_store()
        return made.store

    async def another() -> Store:
        return PostgresStore(url)

    def on_commit(hook: CommitHook) -> None:
        record = postgres_deliveries.record_requests

        async def hooked(
            db: Db, requests: Sequence[postgres_deliveries.Request], parked: list[int] | None = None
        ) -> list[list[RecordedDelivery]]:
            await asyncio.to_thread(hook, len(requests))  # called once per transaction
            return await record(db, requests, parked)

        monkeypatch.setattr(postgres_deliveries, "record_requests", hooked)

    made = Harness(await open_store(), reopen, on_commit, another, one_process=False)
    return made


@pytest.fixture(params=["sqlite", "sqlite-process", "postgres"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness_for(request, tmp_path) as made:
        yield made


@pytest.fixture(params=["sqlite", "postgres"])
async def hooked_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A store whose commits `on_commit` can hook: one in this process."""
    async with harness_for(request, tmp_path) as made:
        yield made


@contextlib.asynccontextmanager
async def harness_for(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param.startswith("sqlite"):
        made = await sqlite_harness(request, tmp_path, process=request.param == "sqlite-process")
        yield made
        await made.store.close()
        return
    async with fresh_database(request.getfixturevalue("postgres_server")) as url:
        made = await postgres_harness(request, url)
        yield made
        await made.store.close()


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store


_counter = iter(range(1, 1_000_000))


def delivery(
    incident: str = "QINC",
    event_type: str = "incident.triggered",
    *,
    at: float = NOW,
    id: str = "",
    event_id: str = "",
    source: str = "pagerduty",
    dedupe_key: str = "",
    dedupe_window: float = 0.0,
) -> NewDelivery:
    n = next(_counter)
    return NewDelivery(
        id=id or f"d-{n}",
        source=source,
        event_id=event_id or f"e-{n}",
        event_type=event_type,
        incident_id=incident,
        status=DeliveryStatus.ACCEPTED,
        body=b"{}",
        received_at=at,
        dedupe_key=dedupe_key,
        dedupe_window=dedupe_window,
    )


def job(
    stack: str = "s1",
    playbook: str = "pb",
    *,
    project: str = "proj",
    delay: float = 0.0,
    coalesce: bool = False,
    cancel_on: tuple[str, ...] = (),
) -> NewJob:
    return NewJob(
        playbook=playbook,
        project=project,
        stack=stack,
        event=bare_event(),
        max_attempts=3,
        delay=delay,
        coalesce=coalesce,
        cancel_on=cancel_on,
    )


async def enqueue(
    store: Store,
    *jobs: NewJob,
    incident: str = "QINC",
    event_type: str = "incident.triggered",
    at: float = NOW,
) -> list[int]:
    recorded = await store.record_delivery(delivery(incident, event_type, at=at), list(jobs))
    return recorded.job_ids


def next_claim(at: float) -> NextClaim:
    """A claim with a token of its own."""
    return NextClaim(f"token-{next(_counter)}", at)


def stack_record(stack: str, incident: str = "QINC", service: str = "svc") -> StackRecord:
    return StackRecord(
        "proj", stack, "prog", incident, "pb", service, StackStatus.PROVISIONING, NOW, NOW, ""
    )


# -- the queue: order, one job per stack, retries, delays ----------------------------------------


async def test_claims_follow_arrival_order_one_job_per_stack(store: Store) -> None:
    a1, b1 = await enqueue(store, job("a"), job("b"), incident="QA")
    (a2,) = await enqueue(store, job("a"), incident="QA2")
    (other,) = await enqueue(store, job("a", project="other"), incident="QA3")
    first = await store.claim_next(NOW)
    second = await store.claim_next(NOW)
    third = await store.claim_next(NOW)
    assert first is not None and second is not None and third is not None
    # a2 waits behind a1 on proj/a; other/a is another stack.
    assert (first.id, second.id, third.id) == (a1, b1, other)
    assert await store.claim_next(NOW) is None
    await store.finish(a1, JobStatus.SUCCEEDED, NOW)
    fourth = await store.claim_next(NOW)
    assert fourth is not None and fourth.id == a2
    assert fourth.status == JobStatus.RUNNING and fourth.attempts == 1


@pytest.mark.parametrize(
    "data",
    [
        {"huge": 2**70},  # beyond 64 bits: kept exact, not read back as a float
        {"edge": 2**63 - 1, "low": -(2**63), "unsigned": 2**64 - 1},  # the 64-bit edges
        {"below": -(2**63) - 1},  # 19 digits, as the edges, and orjson reads it as a float
        {"negative": -(2**64)},
        {"lone": "\ud800x"},  # a lone surrogate
        {"digits": "P12345678901234567890123", "nested": {"list": [1, 2.5, None, True, "é"]}},
    ],
    ids=[
        "beyond-64-bits",
        "64-bit-edges",
        "just-below-64-bits",
        "negative-beyond-64-bits",
        "lone-surrogate",
        "digits-in-text",
    ],
)
async def test_a_claimed_job_carries_its_event_exactly_as_enqueued(
    store: Store, data: dict[str, object]
) -> None:
    """Whatever a source accepted comes back unchanged, including what the fast JSON codec cannot
    hold."""
    event = bare_event(**data)
    [job_id] = await enqueue(store, replace(job("a"), event=event))
    claimed = await store.claim_next(NOW)
    stored = await store.get_job(job_id)
    assert claimed is not None and stored is not None
    for found in (claimed.event.data, stored.event.data):
        assert found == data
        assert [type(v) for v in found.values()] == [type(v) for v in data.values()]


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


async def test_a_released_claim_is_back_in_its_place_as_if_never_claimed(store: Store) -> None:
    """A job claimed as its worker stopped goes back to the queue: first on its stack again, its
    attempt not counted, no start time, no lease; the claim's fence stays spent."""
    first, _behind = await enqueue(store, job("a"), job("a"))
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == first
    assert await store.release(first, claimed.fence, NOW) == JobStatus.QUEUED
    released = await store.get_job(first)
    assert released is not None and released.status == JobStatus.QUEUED
    assert released.attempts == 0 and released.started_at is None
    assert released.lease_expires_at is None
    with pytest.raises(LeaseLost):  # that claim holds it no more: its writes fail
        await store.finish(first, JobStatus.SUCCEEDED, NOW, fence=claimed.fence)
    with pytest.raises(LeaseLost):  # nor can it be released twice
        await store.release(first, claimed.fence, NOW)
    again = await store.claim_next(NOW + 1)
    assert again is not None and again.id == first  # not the job behind it
    assert again.attempts == 1 and again.started_at == NOW + 1 and again.fence > claimed.fence


async def test_a_released_claim_whose_cancel_was_asked_ends_cancelled(store: Store) -> None:
    """A cancel asked while the job was claimed (it looked running) is carried out when the claim
    is handed back: the job never started, and its stack is free for the job behind it."""
    first, behind = await enqueue(store, job("a"), job("a"))
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == first
    flagged = await store.request_cancel(first, NOW + 1)
    assert flagged is not None and flagged.status == JobStatus.RUNNING
    assert await store.release(first, claimed.fence, NOW + 2) == JobStatus.CANCELLED
    ended = await store.get_job(first)
    assert ended is not None
    assert (ended.status, ended.finished_at, ended.error) == (
        JobStatus.CANCELLED,
        NOW + 2,
        "cancelled by request",
    )
    assert ended.attempts == 0 and ended.lease_expires_at is None
    nxt = await store.claim_next(NOW + 3)
    assert nxt is not None and nxt.id == behind


async def test_a_result_can_claim_its_workers_next_job_after_freeing_its_stack(
    store: Store,
) -> None:
    """`finish(then_claim=...)` claims as `claim_next()` would once the result is written: the job
    behind the finished one on its stack (now free) comes before a later job elsewhere."""
    first, behind, elsewhere = await enqueue(store, job("a"), job("a"), job("b"))
    running = await store.claim_next(NOW)
    assert running is not None and running.id == first
    after = await store.finish(
        first, JobStatus.SUCCEEDED, NOW + 1, fence=running.fence, then_claim=next_claim(NOW + 1)
    )
    assert after is not None and after.id == behind
    assert (after.status, after.attempts, after.node, after.fence) == (
        JobStatus.RUNNING,
        1,
        store.node,
        running.fence,  # its own first claim: fences count per job
    )
    assert (after.started_at, after.lease_expires_at) == (NOW + 1, NOW + 1 + store.lease)
    assert await store.get_job(behind) == replace(after, steps=())
    done = await store.get_job(first)
    assert done is not None and done.status == JobStatus.SUCCEEDED
    last = await store.finish(
        behind, JobStatus.FAILED, NOW + 2, fence=after.fence, then_claim=next_claim(NOW + 2)
    )
    assert last is not None and last.id == elsewhere
    assert (
        await store.finish(elsewhere, JobStatus.SUCCEEDED, NOW + 3, then_claim=next_claim(NOW + 3))
        is None
    )


async def test_a_claim_asked_again_with_its_token_gets_the_same_job_back(store: Store) -> None:
    """A claim whose answer was lost is retried with its token: the job it took comes back, not a
    second one (which would be left running with nobody to run it)."""
    first, second = await enqueue(store, job("a"), job("b"))
    taken = await store.claim_next(NOW, "token-1")
    assert taken is not None and taken.id == first
    again = await store.claim_next(NOW + 1, "token-1")
    assert again == taken  # as claimed, not claimed twice
    other = await store.claim_next(NOW + 1, "token-2")
    assert other is not None and other.id == second
    await store.finish(first, JobStatus.SUCCEEDED, NOW + 2, fence=taken.fence)
    assert await store.claim_next(NOW + 3, "token-1") is None  # it no longer runs: nothing left


async def test_a_claim_asked_again_after_its_job_was_taken_over_gets_another(
    store: Store,
) -> None:
    """A job taken over (its lease expired, perhaps while its claim's answer was lost and retried)
    is the recovery's: the claim's token no longer brings it back, to be run beside that recovery."""
    first, second = await enqueue(store, job("a"), job("b"))
    taken = await store.claim_next(NOW, "token-1")
    assert taken is not None and taken.id == first
    [over] = await store.take_over(NOW + store.lease + 1)
    assert over.id == first
    again = await store.claim_next(NOW + store.lease + 2, "token-1")
    assert again is not None and again.id == second


async def test_a_result_and_its_claim_asked_again_are_taken_as_written(store: Store) -> None:
    """A result whose answer was lost is sent again, same result, same fence, same claim token:
    taken as written (no LeaseLost), and the job that claim took comes back."""
    first, behind, elsewhere = await enqueue(store, job("a"), job("a"), job("b"))
    running = await store.claim_next(NOW)
    assert running is not None and running.id == first
    claim = next_claim(NOW + 1)

    async def send() -> Job | None:
        return await store.finish(
            first, JobStatus.SUCCEEDED, NOW + 1, fence=running.fence, then_claim=claim
        )

    after = await send()
    assert after is not None and after.id == behind
    assert await send() == after
    done = await store.get_job(first)
    assert done is not None and done.status == JobStatus.SUCCEEDED
    waiting = await store.get_job(elsewhere)
    assert waiting is not None and waiting.status == JobStatus.QUEUED


async def test_a_step_sent_again_is_recorded_once(store: Store) -> None:
    """A step whose answer was lost is sent again with its key: recorded once, and taken (no
    LeaseLost). Steps of other keys, or without one, are all kept, even when alike."""
    first, unfenced = await enqueue(store, job("a"), job("b"))
    running = await store.claim_next(NOW)
    assert running is not None and running.id == first
    up = StepRecord("up", NOW, 1.0, "succeeded", None, {"create": 1})
    refresh = replace(up, step="refresh")
    for step, key in [(up, "k1"), (up, "k1"), (up, "k2"), (refresh, "k3"), (up, "k1"), (up, None)]:
        await store.add_step(first, step, fence=running.fence, key=key)
    for key in ("k1", "k1", None, None):
        await store.add_step(unfenced, up, key=key)
    recorded = await store.get_job(first)
    assert recorded is not None
    assert [s.step for s in recorded.steps] == ["up", "up", "refresh", "up"]
    other = await store.get_job(unfenced)
    assert other is not None and len(other.steps) == 3
    with pytest.raises(LeaseLost):  # sent again once the job is lost: refused, as any fenced write
        await store.add_step(first, up, fence=running.fence + 1, key="k1")


async def test_a_result_claims_nothing_unless_asked_or_if_it_is_refused(store: Store) -> None:
    first, behind = await enqueue(store, job("a"), job("b"))
    running = await store.claim_next(NOW)
    assert running is not None and running.id == first
    with pytest.raises(LeaseLost):  # a stale fence: no result, and no claim with it
        await store.finish(
            first, JobStatus.SUCCEEDED, NOW, fence=running.fence + 1, then_claim=next_claim(NOW)
        )
    assert await store.finish(first, JobStatus.SUCCEEDED, NOW, fence=running.fence) is None
    waiting = await store.get_job(behind)
    assert waiting is not None and waiting.status == JobStatus.QUEUED and waiting.attempts == 0


async def test_a_released_retry_keeps_its_earlier_attempts(store: Store) -> None:
    [first] = await enqueue(store, job("a"))
    claimed = await store.claim_next(NOW)
    assert claimed is not None
    await store.retry_later(first, NOW + 5, "transient", fence=claimed.fence)
    retried = await store.claim_next(NOW + 5)
    assert retried is not None and retried.attempts == 2
    await store.release(first, retried.fence, NOW)
    released = await store.get_job(first)
    assert released is not None and released.status == JobStatus.QUEUED
    assert released.attempts == 1 and released.error == "transient"


async def test_a_retry_is_not_due_before_its_turn_on_its_stack(store: Store) -> None:
    """A retry behind its stack's running job, or behind an earlier job of its stack, runs when
    that one is done, not at its own time: `next_due` names it only once it is next (else idle
    workers would poll from its time until the job ahead ends). Scheduled jobs count."""
    ahead, behind = await enqueue(store, job("a"), job("a"))
    first = await claimed(store)
    await store.await_approval(ahead, {"steps": []}, NOW, fence=first.fence)
    second = await claimed(store)  # the stack is free while `ahead` awaits its approval
    assert second.id == behind
    await store.retry_later(behind, NOW + 10, "transient", fence=second.fence)
    await store.decide(ahead, True, NOW)
    running = await claimed(store)  # approved: first in line again
    assert running.id == ahead
    await enqueue(store, job("b", delay=300.0), incident="QS")
    assert await store.next_due() == NOW + 300  # not NOW + 10: `behind` waits for `ahead`
    assert await store.claim_next(NOW + 200) is None
    await store.retry_later(ahead, NOW + 60, "transient", fence=running.fence)
    assert await store.next_due() == NOW + 60  # `ahead` is still before `behind` in line
    again = await claimed(store, NOW + 60)
    await store.finish(ahead, JobStatus.SUCCEEDED, NOW + 61, fence=again.fence)
    assert await store.next_due() == NOW + 10  # next on its stack: due since long ago
    assert (await claimed(store, NOW + 61)).id == behind


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
    await enqueue(store, incident="QC", event_type="incident.annotated")
    stored = await store.get_job(destroy)
    assert stored is not None and stored.status == JobStatus.SCHEDULED  # not a listed event
    await enqueue(store, incident="QC", event_type="incident.reopened")
    stored = await store.get_job(destroy)
    assert stored is not None and stored.status == JobStatus.CANCELLED


async def test_queued_coalescing_runs_collapse_into_the_newest(store: Store) -> None:
    (running,) = await enqueue(store, job(coalesce=True))
    assert (await store.claim_next(NOW)) is not None
    # Not superseded: a run that does not coalesce, and runs of another stack or playbook.
    others = await enqueue(
        store, job(), job("s2", coalesce=True), job(playbook="pb2", coalesce=True), incident="QX"
    )
    waiting = [
        (await enqueue(store, job(coalesce=True), event_type="incident.acknowledged"))[0]
        for _ in range(3)
    ]
    jobs = {j.id: j for j in await store.list_jobs(limit=20)}
    assert jobs[running].status == JobStatus.RUNNING  # a running job is never superseded
    assert [jobs[i].status for i in others] == [JobStatus.QUEUED] * 3
    assert [jobs[i].status for i in waiting] == [
        JobStatus.COALESCED,
        JobStatus.COALESCED,
        JobStatus.QUEUED,
    ]
    # Each newer run supersedes the one queued before it: the chain ends at the run that works.
    assert [jobs[i].coalesced_into for i in waiting] == [waiting[1], waiting[2], None]


async def test_a_delivery_names_the_waiting_jobs_it_ended(store: Store) -> None:
    await enqueue(store, job(coalesce=True), incident="QE")
    later = job("s2", "destroy", delay=300.0, cancel_on=("incident.reopened",))
    await enqueue(store, later, incident="QE", event_type="incident.resolved")
    reopened = await store.record_delivery(
        delivery("QE", "incident.reopened"), [job(coalesce=True)]
    )
    assert sorted(reopened.ended) == [
        ("destroy", JobStatus.CANCELLED),
        ("pb", JobStatus.COALESCED),
    ]
    quiet = await store.record_delivery(delivery("QE", "incident.acknowledged"), [job("s3")])
    assert quiet.created and quiet.ended == ()


async def test_a_run_waiting_to_retry_is_not_superseded(store: Store) -> None:
    (first,) = await enqueue(store, job(coalesce=True))
    assert (await store.claim_next(NOW)) is not None
    await store.retry_later(first, NOW + 30, "transient")
    (newer,) = await enqueue(store, job(coalesce=True), event_type="incident.acknowledged")
    retrying, queued = await store.get_job(first), await store.get_job(newer)
    assert retrying is not None and retrying.status == JobStatus.QUEUED
    assert queued is not None and queued.status == JobStatus.QUEUED


async def test_jobs_are_listed_by_incident_and_status_page_by_page(store: Store) -> None:
    ids = await enqueue(store, job("a"), job("b"), job("c"), incident="QL")
    await enqueue(store, job("d"), incident="QOTHER")
    assert (await store.claim_next(NOW)) is not None
    page = await store.list_jobs(incident_id="QL", limit=2)
    rest = await store.list_jobs(incident_id="QL", limit=2, offset=2)
    assert [j.id for j in page + rest] == ids
    running = await store.list_jobs(status=JobStatus.RUNNING)
    assert [j.id for j in running] == [ids[0]]


async def test_jobs_are_listed_newest_first_on_request(store: Store) -> None:
    a, b, c = await enqueue(store, job("a"), job("b"), job("c"), incident="QN1")
    (other,) = await enqueue(store, job("d"), incident="QN2")
    assert [j.id for j in await store.list_jobs(limit=2, newest_first=True)] == [other, c]
    page = await store.list_jobs(incident_id="QN1", limit=2, newest_first=True)
    rest = await store.list_jobs(incident_id="QN1", limit=2, offset=2, newest_first=True)
    assert [j.id for j in page + rest] == [c, b, a]


async def test_recent_incidents_are_ordered_by_their_newest_job(store: Store) -> None:
    assert await store.recent_incident_ids(5) == []
    await enqueue(store, job("a"), incident="QRA")
    await enqueue(store, job("b"), incident="QRB")
    await enqueue(store, job("c"), incident="QRC")
    await enqueue(store, job("a2"), incident="QRA", event_type="incident.acknowledged")
    assert await store.recent_incident_ids(5) == ["QRA", "QRC", "QRB"]
    assert await store.recent_incident_ids(2) == ["QRA", "QRC"]
    # A noisy incident owning all the newest jobs does not hide the others.
    await enqueue(store, *[job(f"n{i}") for i in range(120)], incident="QRNOISY")
    assert await store.recent_incident_ids(3) == ["QRNOISY", "QRA", "QRC"]
    assert await store.recent_incident_ids(10) == ["QRNOISY", "QRA", "QRC", "QRB"]


async def test_an_incident_summary_has_its_newest_jobs_their_count_and_its_sources(
    store: Store,
) -> None:
    first, _ = await enqueue(store, job("s1"), job("s2"), incident="QS")
    await store.record_delivery(delivery("QS", source="manual"), [job("s3")])
    await store.record_delivery(delivery("QS", "incident.acknowledged"), [])
    [third] = await store.list_jobs(incident_id="QS", limit=1, newest_first=True)
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == first
    await store.add_step(first, StepRecord("up", NOW, 1.0, "succeeded"))
    assert await store.reserve_stack(stack_record("s1", "QS"), Caps()) is None

    summary = await store.incident_summary("QS", 2)
    assert summary is not None and summary.id == "QS"
    assert summary.status == IncidentStatus.ACKNOWLEDGED
    assert summary.sources == ("pagerduty", "manual")
    assert summary.job_count == 3
    assert [j.id for j in summary.jobs] == [third.id, third.id - 1]
    assert [s.stack for s in summary.stacks] == ["s1"]
    [oldest] = (await store.incident_summary("QS", 5) or summary).jobs[2:]
    assert oldest.id == first and oldest.steps == ()  # a summary reads no steps
    assert await store.incident_summary("QSNONE", 2) is None
    # An incident known only by its stack (its jobs pruned) is still summarised.
    assert await store.reserve_stack(stack_record("only", "QSTACK"), Caps()) is None
    alone = await store.incident_summary("QSTACK", 2)
    assert alone is not None and alone.job_count == 0 and alone.jobs == () and alone.sources == ()
    assert [s.stack for s in alone.stacks] == ["only"]


async def test_unfinished_jobs_are_counted_by_status(store: Store) -> None:
    assert await store.unfinished_job_counts() == {}
    done, running, _, _ = await enqueue(store, job("a"), job("b"), job("c"), job("d"))
    await enqueue(store, job("e", delay=300.0), incident="QLATER")
    for claimed in (done, running):
        assert (await store.claim_next(NOW)) is not None, claimed
    await store.finish(done, JobStatus.SUCCEEDED, NOW)
    assert await store.unfinished_job_counts() == {
        JobStatus.QUEUED: 2,
        JobStatus.RUNNING: 1,
        JobStatus.SCHEDULED: 1,
    }


# -- dedupe ------------------------------------------------------------------------------------


async def test_a_redelivery_creates_nothing(store: Store) -> None:
    original = delivery("QR")
    first = await store.record_delivery(original, [job()])
    again = await store.record_delivery(original, [job()])
    assert first.created and len(first.job_ids) == 1
    assert not again.created and again.job_ids == [] and again.duplicate_of == original.id
    assert again.status == DeliveryStatus.DUPLICATE
    assert len(await store.list_jobs(limit=10)) == 1


async def test_the_same_event_under_a_new_delivery_id_is_a_redelivery(store: Store) -> None:
    first = await store.record_delivery(delivery(id="wh-1", event_id="E1"), [job()])
    replay = await store.record_delivery(delivery(id="wh-2", event_id="E1"), [job()])
    other_source = await store.record_delivery(
        delivery("QAM", id="am-1", event_id="E1", source="alertmanager"), [job()]
    )
    assert first.created and not replay.created and replay.duplicate_of == "wh-1"
    assert other_source.created  # event ids are only unique within a source
    assert len(await store.list_jobs()) == 2


async def test_content_dedupe_holds_only_within_its_window(store: Store) -> None:
    def ev2(at: float) -> NewDelivery:
        return delivery("QW", at=at, dedupe_key="body-1", dedupe_window=300)

    assert (await store.record_delivery(ev2(NOW), [job()])).created
    repeat = await store.record_delivery(ev2(NOW + 299), [job()])
    assert not repeat.created and repeat.job_ids == []
    later = await store.record_delivery(ev2(NOW + 301), [job()])
    # Past the window it is a new delivery; the incident is still open, so no new job.
    assert later.created and later.status == DeliveryStatus.DEDUPLICATED and later.job_ids == []


async def test_a_change_of_incident_state_ends_content_dedupe(store: Store) -> None:
    def ev2(event_type: str, key: str) -> NewDelivery:
        return delivery("QS", event_type, dedupe_key=key, dedupe_window=300)

    assert (await store.record_delivery(ev2("incident.triggered", "T"), [job()])).job_ids
    assert (await store.record_delivery(ev2("incident.resolved", "R"), [job()])).job_ids
    # The very same trigger body, re-fired after the resolve (same clock: not the window's doing).
    refire = await store.record_delivery(ev2("incident.triggered", "T"), [job()])
    assert refire.created and refire.job_ids
    assert not (await store.record_delivery(ev2("incident.triggered", "T"), [job()])).created


async def test_a_trigger_for_an_open_incident_is_a_repeat(store: Store) -> None:
    await enqueue(store, job(), incident="QO")
    repeat = await store.record_delivery(delivery("QO"), [job()])
    assert repeat.created and repeat.job_ids == []
    assert repeat.status == DeliveryStatus.DEDUPLICATED
    await enqueue(store, incident="QO", event_type="incident.resolved")
    reopened = await store.record_delivery(delivery("QO"), [job()])
    assert len(reopened.job_ids) == 1


async def test_the_deliveries_of_one_commit_are_each_judged_after_those_before_it(
    store: Store,
) -> None:
    """Deliveries recorded together (one request, so one commit) that share one thing each, an
    incident, a dedupe key, an event or an id: each is judged on what those before it wrote, as
    if it came alone after them."""
    sent = [
        (delivery("QJ1"), [job("j1")]),
        (delivery("QJ1"), [job("j1")]),  # the same incident, already open: a repeat
        (delivery("QJ2", dedupe_key="body", dedupe_window=300), [job("j2")]),
        (delivery("QJ3", dedupe_key="body", dedupe_window=300), [job("j3")]),  # the same body
        (delivery("QJ4", event_id="E-J"), [job("j4")]),
        (delivery("QJ5", event_id="E-J"), [job("j5")]),  # the same event, sent again
        (delivery("QJ6", id="wh-J"), [job("j6")]),
        (delivery("QJ7", id="wh-J"), [job("j7")]),  # the same delivery id
        (delivery("QJ1", "incident.resolved"), [job("j1")]),
        (delivery("QJ1"), [job("j1")]),  # a trigger after the resolve opens it again
    ]
    recorded = await store.record_deliveries(sent)
    assert [r.status for r in recorded] == [
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.DEDUPLICATED,
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.DUPLICATE,
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.DUPLICATE,
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.DUPLICATE,
        DeliveryStatus.ACCEPTED,
        DeliveryStatus.ACCEPTED,
    ]
    assert [r.duplicate_of for r in recorded][3:8:2] == [sent[2][0].id, sent[4][0].id, "wh-J"]
    assert [len(r.job_ids) for r in recorded] == [1, 0, 1, 0, 1, 0, 1, 0, 1, 1]
    first = await store.incident("QJ1")
    assert first is not None and first.status == IncidentStatus.TRIGGERED
    assert len(first.deliveries) == 4 and len(first.jobs) == 3
    for repeated in ("QJ3", "QJ5", "QJ7"):
        assert await store.incident(repeated) is None


async def test_coalescing_jobs_recorded_together_supersede_in_order(store: Store) -> None:
    """Coalescing runs of one playbook on a shared stack, from deliveries of different incidents
    recorded in one commit: each supersedes those before it, and says so once."""
    sent = [(delivery(f"QK{i}"), [job("shared", coalesce=True)]) for i in range(3)]
    recorded = await store.record_deliveries(sent)
    superseded = ("pb", JobStatus.COALESCED)
    assert [r.ended for r in recorded] == [(), (superseded,), (superseded,)]
    ids = [r.job_ids[0] for r in recorded]
    jobs = {j.id: j for j in await store.list_jobs(limit=20)}
    assert [jobs[i].status for i in ids] == [JobStatus.COALESCED] * 2 + [JobStatus.QUEUED]
    assert [jobs[i].coalesced_into for i in ids] == [ids[1], ids[2], None]


async def test_concurrent_repeats_create_one_delivery(store: Store) -> None:
    calls = [
        store.record_delivery(delivery(dedupe_key="same-body", dedupe_window=300), [job()])
        for _ in range(10)
    ]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert sum(o.created for o in outcomes) == 1
    assert len(await store.list_jobs()) == 1


async def test_a_delivery_sent_to_two_nodes_at_once_is_stored_once(harness: Harness) -> None:
    """The same delivery id, the same event under another id, and the same body under new ids,
    raced through two stores on the same data as two nodes behind a load balancer would: one
    delivery, one set of jobs."""
    other = await harness.another()
    await other.open()
    try:
        stores = [harness.store, other]
        for round_ in range(5):
            same_id = delivery(
                f"QT{round_}",
                id=f"wh-{round_}",
                event_id=f"E{round_}",
                dedupe_key=f"body-{round_}",
                dedupe_window=300,
            )
            same_event = replace(same_id, id=f"wh-{round_}-again")
            same_body = replace(same_id, id=f"ev2-{round_}", event_id=f"E{round_}-again")
            sent = [same_id] * 4 + [same_event] * 2 + [same_body] * 2
            calls = [stores[i % 2].record_delivery(d, [job()]) for i, d in enumerate(sent)]
            outcomes = await asyncio.wait_for(asyncio.gather(*calls), 10)
            assert sum(o.created for o in outcomes) == 1
            incident = await other.incident(f"QT{round_}")
            assert incident is not None and len(incident.deliveries) == 1
            assert len(incident.jobs) == 1
    finally:
        await other.close()


async def test_a_notification_s_deliveries_share_its_body_and_commit_together(
    store: Store,
) -> None:
    """Several alerts of one notification: one body object, each its own delivery and jobs."""
    body = b'{"alerts": ["a", "b", "c"]}'
    request = [(replace(delivery(f"QA{i}"), body=body), [job(f"a{i}")]) for i in range(3)]
    recorded = await store.record_deliveries(request)
    assert [len(r.job_ids) for r in recorded] == [1, 1, 1] and all(r.created for r in recorded)
    again = await store.record_deliveries(request)  # the same notification, redelivered
    assert [r.status for r in again] == [DeliveryStatus.DUPLICATE] * 3
    for i in range(3):
        incident = await store.incident(f"QA{i}")
        assert incident is not None and [j.stack for j in incident.jobs] == [f"a{i}"]


async def test_concurrent_claims_from_two_stores_never_share_a_stack(harness: Harness) -> None:
    """Workers of two nodes claiming at once: each job is claimed once, and a stack's next job only
    after the one before it finished."""
    other = await harness.another()
    await other.open()
    try:
        ids = await enqueue(harness.store, *(job(f"s{i % 3}") for i in range(12)))
        running: dict[str, int] = {}
        order: list[int] = []

        async def worker(store: Store) -> None:
            while len(order) < len(ids):
                claimed = await store.claim_next(NOW)
                if claimed is None:
                    await asyncio.sleep(0.001)
                    continue
                assert claimed.stack not in running, "two jobs of one stack at once"
                running[claimed.stack] = claimed.id
                order.append(claimed.id)
                await asyncio.sleep(0.002)
                del running[claimed.stack]
                await store.finish(claimed.id, JobStatus.SUCCEEDED, NOW)

        workers = [worker(s) for s in (harness.store, other) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*workers), 20)
        assert sorted(order) == ids  # each job once
        for stack in ("s0", "s1", "s2"):  # and each stack's jobs in arrival order
            mine = [i for i in order if i in ids[int(stack[1]) :: 3]]
            assert mine == ids[int(stack[1]) :: 3]
    finally:
        await other.close()


async def test_opening_again_and_concurrently_keeps_the_data(harness: Harness) -> None:
    """Two stores opening the same data at once (two nodes starting together) both work, and
    neither loses or doubles what was there (schema created or migrated once)."""
    (first,) = await enqueue(harness.store, job())
    stores = [await harness.another() for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*(s.open() for s in stores)), 20)
    try:
        for store in stores:
            assert [j.id for j in await store.list_jobs()] == [first]
        (second,) = await enqueue(stores[0], job("s2"), incident="QSECOND")
        assert [j.id for j in await stores[1].list_jobs()] == [first, second]
    finally:
        for store in stores:
            await store.close()
    reopened = await harness.reopen()
    assert [j.id for j in await reopened.list_jobs()] == [first, second]


# -- group commit --------------------------------------------------------------------------------


async def test_concurrent_deliveries_commit_together_each_with_its_own_answer(
    hooked_harness: Harness,
) -> None:
    harness = hooked_harness
    store, batches = harness.store, list[int]()
    harness.on_commit(batches.append)
    results = await asyncio.gather(
        *(store.record_delivery(delivery(f"QP{i}"), [job(f"s{i}")]) for i in range(50))
    )
    assert sum(batches) == 50
    # With group commit, the first may commit alone and the rest together.
    assert len(batches) <= 2 if harness.group_commit else len(batches) == 50
    for i, result in enumerate(results):
        incident = await store.incident(f"QP{i}")
        assert incident is not None and result.created
        assert result.job_ids == [j.id for j in incident.jobs]  # its own jobs, nobody else's
        assert incident.jobs[0].stack == f"s{i}"


class Broken(Exception):
    """A commit that failed as a whole."""


async def test_a_failed_commit_fails_its_callers_and_no_others(hooked_harness: Harness) -> None:
    harness = hooked_harness
    store = harness.store
    loop = asyncio.get_running_loop()
    entered, release = asyncio.Event(), threading.Event()
    commits: list[int] = []

    def hook(size: int) -> None:
        commits.append(size)
        if len(commits) == 1:  # hold the first commit until the second batch waits, then fail it
            loop.call_soon_threadsafe(entered.set)
            release.wait(10)
            raise Broken("the disk went away")

    harness.on_commit(hook)
    first = [asyncio.ensure_future(store.record_delivery(delivery("QF"), [job()]))]
    await asyncio.wait_for(entered.wait(), 10)
    second = [
        asyncio.ensure_future(store.record_delivery(delivery(f"QN{i}"), [job(f"n{i}")]))
        for i in range(5)
    ]
    await asyncio.sleep(0)  # one turn of the loop: the second batch is waiting for the next commit
    release.set()
    failed = await asyncio.gather(*first, return_exceptions=True)
    committed = await asyncio.wait_for(asyncio.gather(*second), 10)
    assert all(isinstance(o, (Broken, StoreUnavailable)) for o in failed), failed
    assert all(r.created and len(r.job_ids) == 1 for r in committed)
    # Grouped, the five waited for the next commit; alone, each committed while the first hung.
    assert commits == ([1, 5] if harness.group_commit else [1] * 6)
    assert await store.incident("QF") is None  # nothing of the failed commit was stored


async def test_a_delivery_the_store_cannot_hold_fails_alone(store: Store) -> None:
    good = [delivery(f"QG{i}") for i in range(10)]
    # A lone surrogate, as aiohttp makes of a non-UTF-8 byte in an unsigned header.
    bad = delivery("QB", id="bad-\udcff")
    calls = [store.record_delivery(d, [job(d.incident_id)]) for d in good]
    calls.insert(5, store.record_delivery(bad, [job()]))
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    rejected = outcomes.pop(5)
    assert isinstance(rejected, RecordRejected) and "delivery id" in str(rejected)
    assert all(not isinstance(o, BaseException) and o.created for o in outcomes)
    assert await store.incident("QB") is None
    assert len(await store.list_jobs(limit=100)) == 10


KEY_NAMES = {
    "id": "delivery id",
    "event_id": "event id",
    "incident_id": "incident id",
    "dedupe_key": "dedupe key",
}


@pytest.mark.parametrize("key", KEY_NAMES)
async def test_a_delivery_whose_key_is_too_long_to_index_fails_alone(
    store: Store, key: str
) -> None:
    """Each key a delivery is looked up by is refused past MAX_KEY_BYTES (counted in UTF-8 bytes,
    so the same on both stores: PostgreSQL cannot index much more), and only its own request fails.
    One of exactly that size is stored."""

    def keyed(incident: str, value: str) -> NewDelivery:
        changes: dict[str, object] = {key: value}
        return dataclasses.replace(delivery(incident), **changes)  # type: ignore[arg-type]

    fits, too_long = "é" * (MAX_KEY_BYTES // 2), "é" * (MAX_KEY_BYTES // 2) + "x"
    calls = [store.record_delivery(delivery(f"QK{i}"), [job(f"QK{i}")]) for i in range(4)]
    calls.insert(2, store.record_delivery(keyed("QLONG", too_long), [job("long")]))
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    rejected = outcomes.pop(2)
    assert isinstance(rejected, RecordRejected), rejected
    assert f"the {KEY_NAMES[key]} is longer than {MAX_KEY_BYTES} bytes" in str(rejected)
    assert all(not isinstance(o, BaseException) and o.created for o in outcomes)
    stored = await store.record_delivery(keyed("QFITS", fits), [job("fits")])
    assert stored.created and len(stored.job_ids) == 1
    assert len(await store.list_jobs(limit=100)) == 5


# Free text from outside (an exception's message quoting an event's title, a service's name, a
# reply's body) may hold what a store cannot: a NUL (PostgreSQL's text), a lone surrogate (UTF-8).
HOSTILE_TEXT = "a\0b\udcffc"


def storable(text: str) -> bool:
    return (
        "\0" not in text
        and text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") == text
    )


async def test_free_text_a_store_cannot_hold_is_stored_made_storable(store: Store) -> None:
    """Each write of free text stores it with what the store cannot hold replaced, rather than
    failing: a job's result that cannot be written would leave it running, retried forever."""
    retried, failed = await enqueue(store, job("a"), job("b"))
    for job_id in (retried, failed):
        claimed = await store.claim_next(NOW)
        assert claimed is not None and claimed.id == job_id
        step = StepRecord("up", NOW, 1.0, "failed", error=HOSTILE_TEXT)
        await store.add_step(job_id, step, fence=claimed.fence)
        if job_id == retried:
            await store.retry_later(job_id, NOW + 60, HOSTILE_TEXT, fence=claimed.fence)
        else:
            await store.finish(
                job_id, JobStatus.FAILED, NOW, error=HOSTILE_TEXT, fence=claimed.fence
            )
    for job_id in (retried, failed):
        got = await store.get_job(job_id)
        assert got is not None and got.error is not None and storable(got.error)
        assert got.error.startswith("a") and got.error.endswith("c"), got.error
        [step_read] = got.steps
        assert step_read.error is not None and storable(step_read.error)
    assert (await store.get_job(failed)).status == JobStatus.FAILED  # type: ignore[union-attr]
    # An operator's reason for a rejection, from the API.
    (awaiting,) = await enqueue(store, job("c"), incident="QREJECT")
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == awaiting
    await store.await_approval(awaiting, {"steps": []}, NOW, fence=claimed.fence)
    decision = await store.decide(awaiting, False, NOW, reason=HOSTILE_TEXT)
    assert decision is not None and decision.made
    assert decision.job.error is not None and storable(decision.job.error)
    # A stack's service (an event's text) is counted under the same storable name.
    caps = Caps(per_service=1)
    assert await store.reserve_stack(stack_record("s1", service=HOSTILE_TEXT), caps) is None
    assert await store.reserve_stack(stack_record("s2", service=HOSTILE_TEXT), caps) is not None
    record = await store.get_stack("proj", "s1")
    assert record is not None and storable(record.service)


async def test_a_request_is_stored_whole_or_not_at_all(store: Store) -> None:
    request = [(delivery("QW1"), [job()]), (delivery("QW2", id="bad-\udcff"), [job()])]
    with pytest.raises(RecordRejected):
        await store.record_deliveries(request)
    assert await store.incident("QW1") is None and await store.list_jobs() == []


# -- recovery, steps and the incident record -----------------------------------------------------


async def test_running_jobs_survive_a_restart(harness: Harness) -> None:
    a, b = await enqueue(harness.store, job("a"), job("b", delay=60.0))
    claimed = await harness.store.claim_next(NOW)
    assert claimed is not None and claimed.id == a
    steps = (
        StepRecord("preview", NOW, 3.0, "succeeded"),
        StepRecord("up", NOW, 12.5, "failed", "boom", {"create": 1}),
    )
    for step in steps:
        await harness.store.add_step(a, step)
    store = await harness.reopen()
    [running] = await store.list_jobs(status=JobStatus.RUNNING)
    assert running.id == a and running.attempts == 1
    stored = await store.get_job(a)
    assert stored is not None and stored.steps == steps
    scheduled = await store.get_job(b)
    assert scheduled is not None and scheduled.status == JobStatus.SCHEDULED
    await store.retry_later(a, NOW, "interrupted")
    assert await store.list_jobs(status=JobStatus.RUNNING) == []
    again = await store.claim_next(NOW)
    assert again is not None and again.id == a and again.attempts == 2


async def test_an_incident_record_holds_its_deliveries_jobs_and_stacks(store: Store) -> None:
    trigger = delivery("QI", at=NOW)
    ack = delivery("QI", "incident.acknowledged", at=NOW + 5)
    [(j1,)] = [(await store.record_delivery(trigger, [job("qi")])).job_ids]
    await store.record_delivery(ack, [])
    await store.record_delivery(delivery("QELSE"), [job("else")])
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == j1
    step = StepRecord("up", NOW, 1.0, "succeeded")
    await store.add_step(j1, step)
    assert await store.reserve_stack(stack_record("qi", "QI"), Caps()) is None
    await store.touch_stack("proj", "qi", operation="up", now=NOW + 1, status=StackStatus.LIVE)

    incident = await store.incident("QI")
    assert incident is not None and incident.id == "QI"
    assert incident.status == IncidentStatus.ACKNOWLEDGED
    assert [(d.id, d.event_type, d.status) for d in incident.deliveries] == [
        (trigger.id, "incident.triggered", DeliveryStatus.ACCEPTED),
        (ack.id, "incident.acknowledged", DeliveryStatus.ACCEPTED),
    ]
    assert incident.deliveries[1].received_at == NOW + 5
    assert [(j.id, j.steps) for j in incident.jobs] == [(j1, (step,))]
    [stack] = incident.stacks
    assert (stack.stack, stack.status, stack.incident_status) == (
        "qi",
        StackStatus.LIVE,
        IncidentStatus.ACKNOWLEDGED,
    )
    assert await store.incident("QNONE") is None


async def test_responder_s_own_deliveries_are_no_news_of_their_incident(store: Store) -> None:
    # A manual run's event type is no lifecycle change, but "manual.pb" runs after a trigger: a run
    # made by responder itself never counts as a repeat trigger, nor sets the incident's status.
    recorded = await store.record_delivery(delivery("QM", source="manual"), [job()])
    again = await store.record_delivery(delivery("QM", source="manual"), [job()])
    assert recorded.job_ids and again.job_ids
    assert again.status == DeliveryStatus.ACCEPTED
    incident = await store.incident("QM")
    assert incident is not None and incident.status is None and len(incident.jobs) == 2


# -- leases: the node that runs a job, and its fence -----------------------------------------------


async def claimed(store: Store, now: float = NOW) -> Job:
    job = await store.claim_next(now)
    assert job is not None
    return job


async def test_a_claim_leases_the_job_to_this_node_with_a_new_fence(store: Store) -> None:
    (queued,) = await enqueue(store, job())
    first = await claimed(store)
    assert (first.id, first.node, first.fence) == (queued, store.node, 1)
    assert first.lease_expires_at == NOW + store.lease
    await store.retry_later(queued, NOW + 5, "transient", fence=first.fence)
    second = await claimed(store, NOW + 5)
    assert (second.fence, second.lease_expires_at) == (2, NOW + 5 + store.lease)
    assert await store.get_job(queued) == replace(second, steps=())
    assert await store.list_jobs(status=JobStatus.RUNNING) == [second]


WRITES: dict[str, Callable[[Store, int, int], Awaitable[object]]] = {
    "add_step": lambda s, j, f: s.add_step(j, StepRecord("up", NOW, 1.0, "succeeded"), fence=f),
    "finish": lambda s, j, f: s.finish(j, JobStatus.SUCCEEDED, NOW, outputs={"a": 1}, fence=f),
    "retry_later": lambda s, j, f: s.retry_later(j, NOW + 9, "again", fence=f),
    "await_approval": lambda s, j, f: s.await_approval(j, {"steps": []}, NOW, fence=f),
}


async def test_a_stack_record_by_a_job_is_written_only_while_the_job_is_held(store: Store) -> None:
    """A node that lost a job must not say what its stack is now: its `live` after the next holder's
    `destroyed` would hold a cap slot for a stack that is gone, and its settings file would replace
    the one the next holder's operation made."""
    assert await store.reserve_stack(stack_record("s1"), Caps()) is None
    (queued,) = await enqueue(store, job("s1", project="proj"))
    old = await claimed(store)

    async def touch(operation: str, at: float, status: StackStatus, fence: int) -> None:
        held = (queued, fence)
        await store.touch_stack("proj", "s1", operation=operation, now=at, status=status, held=held)

    await touch("up", NOW, StackStatus.LIVE, old.fence)
    [taken] = await store.take_over(NOW + store.lease + 1)
    await touch("destroy", NOW + 2, StackStatus.DESTROYED, taken.fence)
    with pytest.raises(LeaseLost) as lost:
        await touch("up", NOW + 3, StackStatus.LIVE, old.fence)
    assert lost.value.job_id == queued
    # So with its settings file: the next holder's stays.
    await store.save_stack_settings("proj", "s1", "salt: new", held=(queued, taken.fence))
    for text in ("salt: stale", None):
        with pytest.raises(LeaseLost):
            await store.save_stack_settings("proj", "s1", text, held=(queued, old.fence))
    assert await store.stack_settings("proj", "s1") == "salt: new"
    record = await store.get_stack("proj", "s1")
    assert record is not None and record.status == StackStatus.DESTROYED
    assert (record.last_operation, record.last_activity_at) == ("destroy", NOW + 2)
    await store.touch_stack("proj", "s1", operation="reap", now=NOW + 4)  # unfenced: the reaper's
    assert (await store.get_stack("proj", "s1")).last_operation == "reap"  # type: ignore[union-attr]


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_write_with_a_stale_fence_raises_lease_lost_and_changes_nothing(
    store: Store, write: str
) -> None:
    """The job was taken over (its lease expired): the old fence writes nothing; the new one does."""
    (queued,) = await enqueue(store, job())
    old = await claimed(store)
    [taken] = await store.take_over(NOW + store.lease + 1)
    assert taken.fence == old.fence + 1
    before = await store.get_job(queued)
    with pytest.raises(LeaseLost) as lost:
        await WRITES[write](store, queued, old.fence)
    assert lost.value.job_id == queued
    assert await store.get_job(queued) == before
    await WRITES[write](store, queued, taken.fence)
    after = await store.get_job(queued)
    assert after != before
    if write == "finish":  # the same result again is a retry's whose answer was lost: taken
        await WRITES[write](store, queued, taken.fence)
        assert await store.get_job(queued) == after
        with pytest.raises(LeaseLost):  # any other, under a fence that holds the job no more
            await store.finish(queued, JobStatus.FAILED, NOW, fence=taken.fence)
        with pytest.raises(LeaseLost):
            await store.finish(queued, JobStatus.SUCCEEDED, NOW + 1, fence=taken.fence)
        assert await store.get_job(queued) == after
    elif write == "retry_later":  # the same retry again (its answer lost): taken as written
        await WRITES[write](store, queued, taken.fence)
        assert await store.get_job(queued) == after
        with pytest.raises(LeaseLost):  # any other: the job no longer runs under that fence
            await store.retry_later(queued, NOW + 10, "another", fence=taken.fence)
        with pytest.raises(LeaseLost):
            await WRITES[write](store, queued, old.fence)
        assert await store.get_job(queued) == after
    elif write != "add_step":  # the job no longer runs: no fence holds it any more
        with pytest.raises(LeaseLost):
            await WRITES[write](store, queued, taken.fence)


async def test_renewal_extends_held_leases_and_names_the_lost_ones(store: Store) -> None:
    a, b, c = await enqueue(store, job("a"), job("b"), job("c"))
    held = {j.id: j.fence for j in [await claimed(store) for _ in range(3)]}
    await store.finish(b, JobStatus.SUCCEEDED, NOW, fence=held[b])  # no longer running
    stale = {**held, c: held[c] - 1, 999_999: 1}  # c's fence is not the one it runs under
    assert await store.renew_leases(stale, NOW + 10) == {b, c, 999_999}
    renewed, other = await store.get_job(a), await store.get_job(c)
    assert renewed is not None and renewed.lease_expires_at == NOW + 10 + store.lease
    assert other is not None and other.lease_expires_at == NOW + store.lease
    assert await store.renew_leases({}, NOW) == set()


async def test_take_over_takes_expired_leases_this_node_s_own_included(store: Store) -> None:
    a, b = await enqueue(store, job("a"), job("b"))
    first = await claimed(store)
    assert await store.take_over(NOW + store.lease - 1) == []  # still leased
    second = await claimed(store, NOW + 10)
    [taken] = await store.take_over(NOW + store.lease + 1)  # the first lease only
    assert (taken.id, taken.node, taken.fence) == (first.id, store.node, first.fence + 1)
    assert taken.lease_expires_at == NOW + 2 * store.lease + 1
    assert taken.status == JobStatus.RUNNING and taken.attempts == 1
    assert await store.take_over(NOW + store.lease + 1) == []  # its new lease holds
    [later] = await store.take_over(NOW + store.lease + 11)
    assert later.id == second.id == b and first.id == a


async def test_another_node_s_running_job_waits_for_its_lease_unless_one_process(
    harness: Harness,
) -> None:
    """With PostgreSQL a running job of another (live) node is left alone until its lease expires.
    With SQLite only one process uses the file: another node's job was left by an earlier life of
    this process, and is taken over at once."""
    (queued,) = await enqueue(harness.store, job())
    earlier = await claimed(harness.store)
    other = await harness.another()
    await other.open()
    try:
        assert other.node != harness.store.node
        taken = await other.take_over(NOW + 1)
        if harness.one_process:
            assert [(j.id, j.node, j.fence) for j in taken] == [(queued, other.node, 2)]
        else:
            assert taken == []
            [late] = await other.take_over(NOW + harness.store.lease + 1)
            assert (late.id, late.node, late.fence) == (queued, other.node, 2)
        with pytest.raises(LeaseLost):
            await harness.store.finish(queued, JobStatus.SUCCEEDED, NOW, fence=earlier.fence)
        assert await harness.store.renew_leases({queued: earlier.fence}, NOW + 2) == {queued}
    finally:
        await other.close()


async def test_a_stack_s_settings_file_round_trips_and_is_deleted(harness: Harness) -> None:
    store = harness.store
    assert await store.stack_settings("proj", "s1") is None
    await store.save_stack_settings("proj", "s1", "config:\n  a: 1\n")
    await store.save_stack_settings("proj", "s2", "salt: x\n")
    await store.save_stack_settings("proj", "s1", "encryptionsalt: v1:abc\n")
    other = await harness.another()  # any node reads what one saved
    await other.open()
    try:
        assert await other.stack_settings("proj", "s1") == "encryptionsalt: v1:abc\n"
        assert await other.stack_settings("other", "s1") is None
        await other.save_stack_settings("proj", "s1", None)
        await other.save_stack_settings("proj", "missing", None)  # nothing to delete: fine
    finally:
        await other.close()
    assert await store.stack_settings("proj", "s1") is None
    assert await store.stack_settings("proj", "s2") == "salt: x\n"


async def test_a_store_says_whether_other_nodes_share_it(harness: Harness) -> None:
    assert harness.store.shared is not harness.one_process  # PostgreSQL: shared; SQLite: not


async def test_sqlite_listens_to_nobody_and_always_leads(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "responder.db", node="n1", lease=5.0)
    await store.open()
    try:
        assert (store.node, store.lease) == ("n1", 5.0)
        await store.listen(lambda: None)
        assert await store.lead() and await store.lead()
    finally:
        await store.close()
    assert SQLiteStore(tmp_path / "other.db").node != SQLiteStore(tmp_path / "other.db").node


def test_sqlite_finds_the_due_scheduled_jobs_by_index(tmp_path: Path) -> None:
    """Each claim first moves the due scheduled jobs into the queue: by the `jobs_due` index, not a
    walk of every scheduled job (which made intake with delayed playbooks 3× slower)."""
    db = sqlite3.connect(tmp_path / "responder.db")
    try:
        ensure_schema(db)
        plan = db.execute(f"EXPLAIN QUERY PLAN {sqlite_queue.PROMOTE_DUE}", (NOW,)).fetchall()
    finally:
        db.close()
    assert "INDEX jobs_due (" in str(plan), plan


# -- jobs queued behind a running one (parked: the claim's walk passes over them) -----------------


async def _running_with_two_behind(store: Store) -> tuple[Job, int, int, int]:
    """A job running on stack a, two recorded behind it (parked) and one on stack b."""
    [first] = await enqueue(store, job("a"))
    running = await store.claim_next(NOW)
    assert running is not None and running.id == first
    behind, last, other = await enqueue(store, job("a"), job("a"), job("b"), incident="QBEHIND")
    taken = await store.claim_next(NOW)
    assert taken is not None and taken.id == other
    assert await store.claim_next(NOW) is None  # stack a is busy
    return running, behind, last, other


@pytest.mark.parametrize("ends", ["finish", "fail", "await_approval", "retry", "release"])
async def test_jobs_queued_behind_a_running_one_follow_it_however_it_leaves(
    store: Store, ends: str
) -> None:
    running, behind, last, _ = await _running_with_two_behind(store)
    fence = running.fence
    if ends == "finish":
        await store.finish(running.id, JobStatus.SUCCEEDED, NOW, fence=fence)
    elif ends == "fail":
        await store.finish(running.id, JobStatus.FAILED, NOW, error="boom", fence=fence)
    elif ends == "await_approval":
        await store.await_approval(running.id, {"steps": []}, NOW, fence=fence)
    elif ends in ("retry", "release"):  # back in line, first: it runs again, then the others
        if ends == "retry":
            await store.retry_later(running.id, NOW, "transient", fence=fence)
        else:
            await store.release(running.id, fence, NOW)
        again = await store.claim_next(NOW)
        assert again is not None and again.id == running.id
        await store.finish(running.id, JobStatus.SUCCEEDED, NOW, fence=again.fence)
    for expected in (behind, last):
        taken = await store.claim_next(NOW)
        assert taken is not None and taken.id == expected, ends
        await store.finish(expected, JobStatus.SUCCEEDED, NOW, fence=taken.fence)
    assert await store.claim_next(NOW) is None


async def test_a_job_scheduled_while_its_stack_is_busy_runs_when_due(store: Store) -> None:
    """Recorded behind a running job but scheduled for later, it joins the queue when due, long
    after that job ended: first in line, and taken."""
    running, behind, last, _ = await _running_with_two_behind(store)
    [later] = await enqueue(store, job("a", delay=60.0), incident="QLATER")
    await store.finish(running.id, JobStatus.SUCCEEDED, NOW, fence=running.fence)
    for expected in (behind, last):
        taken = await store.claim_next(NOW)
        assert taken is not None and taken.id == expected
        await store.finish(expected, JobStatus.SUCCEEDED, NOW, fence=taken.fence)
    assert await store.claim_next(NOW) is None  # not yet due
    due = await store.claim_next(NOW + 60)
    assert due is not None and due.id == later


async def test_a_job_queued_behind_a_running_one_follows_it_when_the_one_before_it_goes(
    store: Store,
) -> None:
    """The next job in line is cancelled or coalesced while it waits: the one after it runs."""
    running, behind, last, _ = await _running_with_two_behind(store)
    assert await store.request_cancel(behind, NOW) is not None
    [newest] = await enqueue(store, job("a", coalesce=True), incident="QLATEST")
    [newer] = await enqueue(store, job("a", coalesce=True), incident="QNEWER")  # coalesces newest
    await store.finish(running.id, JobStatus.SUCCEEDED, NOW, fence=running.fence)
    for expected in (last, newer):
        taken = await store.claim_next(NOW)
        assert taken is not None and taken.id == expected
        await store.finish(expected, JobStatus.SUCCEEDED, NOW, fence=taken.fence)
    coalesced = await store.get_job(newest)
    assert coalesced is not None and coalesced.status == JobStatus.COALESCED


async def test_sqlite_s_claim_passes_over_the_jobs_queued_behind_a_running_one(
    tmp_path: Path,
) -> None:
    """As on PostgreSQL (tests/test_store_postgres.py): jobs recorded behind a running one are
    parked, and the claim of another stack's job costs a small part of what testing each did."""
    path = tmp_path / "responder.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await enqueue(store, job("busy"))
        assert (await store.claim_next(NOW)) is not None
        await store.record_deliveries([(delivery(f"QBUSY{i}"), [job("busy")]) for i in range(1000)])
        [free] = await enqueue(store, job("free"), incident="QFREE")
    finally:
        await store.close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute("SELECT count(*) FROM jobs WHERE parked = 1").fetchone()[0] == 1000
        work = [0]
        db.set_progress_handler(lambda: work.__setitem__(0, work[0] + 1), 100)

        def claim() -> tuple[int, int]:
            work[0] = 0
            db.execute("BEGIN")
            values = {"now": NOW, "node": "n", "expires": NOW + 30, "token": None}
            [claimed] = db.execute(sqlite_queue.CLAIM, values).fetchone()[:1]
            db.execute("ROLLBACK")
            return claimed, work[0]

        assert claim()[0] == free
        parked_cost = claim()[1]
        db.execute("UPDATE jobs SET parked = 0")
        walked, walked_cost = claim()
        assert walked == free
    finally:
        db.close()
    assert parked_cost * 10 < walked_cost, (parked_cost, walked_cost)


async def test_sqlite_s_safety_net_unparks_a_job_no_claim_would_take(tmp_path: Path) -> None:
    path = tmp_path / "responder.db"
    store = SQLiteStore(path)
    await store.open()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        await stall_and_unpark(store, lambda sql: db.execute(sql))
    finally:
        db.close()
        await store.close()


async def stall_and_unpark(store: Store, execute: Callable[[str], object]) -> None:
    """A parked job first in line on an idle stack (its unparking missed, as by a bug), with a job
    not parked behind it: no claim takes either until the safety net unparks the first."""
    [first] = await enqueue(store, job("a"))
    running = await store.claim_next(NOW)
    assert running is not None
    stalled, behind = await enqueue(store, job("a"), job("a"), incident="QSTALL")
    await store.finish(first, JobStatus.SUCCEEDED, NOW, fence=running.fence)
    assert await store.unpark_stalled() == []  # the end unparked the next: nothing to do
    await _maybe_await(execute(f"UPDATE jobs SET parked = {_true(store)} WHERE id = {stalled}"))
    [after] = await enqueue(store, job("a"), incident="QAFTER")  # recorded while a is idle
    assert await store.claim_next(NOW) is None
    assert await store.unpark_stalled() == [stalled]
    for expected in (stalled, behind, after):
        taken = await store.claim_next(NOW)
        assert taken is not None and taken.id == expected
        assert await store.unpark_stalled() == []  # parked behind a running job: as it should be
        await store.finish(expected, JobStatus.SUCCEEDED, NOW, fence=taken.fence)


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result


def _true(store: Store) -> str:
    return "1" if isinstance(store, SQLiteStore) else "true"


# -- approvals and cancellation ------------------------------------------------------------------


async def test_approval_puts_a_job_back_first_in_line(store: Store) -> None:
    gated, behind = await enqueue(store, job("a"), job("a"))
    assert (await store.claim_next(NOW)) is not None
    await store.await_approval(gated, {"operation": "destroy", "steps": []}, NOW)
    # Waiting for a person does not hold the stack: the next job runs meanwhile.
    meanwhile = await store.claim_next(NOW)
    assert meanwhile is not None and meanwhile.id == behind
    await store.finish(behind, JobStatus.SUCCEEDED, NOW)
    (later,) = await enqueue(store, job("a"), incident="QLATER")
    assert await store.expired_approvals(NOW - 1) == []
    assert await store.expired_approvals(NOW) == [gated]
    decision = await store.decide(gated, True, NOW)
    assert decision is not None and decision.made and decision.job.status == JobStatus.QUEUED
    assert decision.job.approved_plan == {"operation": "destroy", "steps": []}
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == gated  # ahead of the job queued after it
    assert claimed.attempts == 1  # waiting for approval used no attempt
    assert later > gated


async def test_a_rejection_ends_the_job_and_a_decision_needs_a_waiting_job(store: Store) -> None:
    gated, other = await enqueue(store, job("a"), job("b"))
    assert (await store.claim_next(NOW)) is not None
    await store.await_approval(gated, {"steps": []}, NOW)
    decision = await store.decide(gated, False, NOW + 1, "not now")
    assert decision is not None and decision.made
    rejected = decision.job
    assert rejected.status == JobStatus.REJECTED
    assert rejected.error == "not now" and rejected.finished_at == NOW + 1
    for approve in (True, False):  # already decided: unchanged, and said so
        again = await store.decide(gated, approve, NOW + 2)
        assert again is not None and not again.made and again.job == rejected
    queued = await store.decide(other, True, NOW)  # never asked: not approved by this
    assert queued is not None and not queued.made
    assert queued.job.status == JobStatus.QUEUED and queued.job.attempts == 0
    assert await store.decide(999_999, True, NOW) is None


async def test_cancel_ends_a_waiting_job_and_flags_a_running_one(store: Store) -> None:
    running, waiting, done = await enqueue(store, job("a"), job("b", delay=60.0), job("c"))
    assert (await store.claim_next(NOW)) is not None
    assert (await store.claim_next(NOW)) is not None
    await store.finish(done, JobStatus.SUCCEEDED, NOW)
    cancelled = await store.request_cancel(waiting, NOW)
    flagged = await store.request_cancel(running, NOW)
    finished = await store.request_cancel(done, NOW)
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert flagged is not None and flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    assert finished is not None and finished.status == JobStatus.SUCCEEDED
    assert not finished.cancel_requested
    assert await store.request_cancel(999_999, NOW) is None


async def test_a_node_hears_of_the_cancels_asked_for_its_own_running_jobs(harness: Harness) -> None:
    """Whichever node a cancel was asked through, the node running the job finds it, however many
    jobs run elsewhere; another node's, waiting or finished jobs are not its concern."""
    store = harness.store
    asked, running, waiting = await enqueue(store, job("a"), job("b"), job("c", delay=60.0))
    for _ in range(2):
        assert (await store.claim_next(NOW)) is not None
    assert await store.cancels_requested() == set()
    other = await harness.another()
    await other.open()
    try:
        (elsewhere,) = await enqueue(other, job("d"), incident="QELSEWHERE")
        assert (await other.claim_next(NOW)) is not None
        for job_id in (asked, waiting, elsewhere):
            assert await other.request_cancel(job_id, NOW) is not None
        assert await store.cancels_requested() == {asked}
        assert await other.cancels_requested() == {elsewhere}
        await store.finish(asked, JobStatus.CANCELLED, NOW)
        assert await store.cancels_requested() == set()
        assert (await store.get_job(running)) is not None
    finally:
        await other.close()


# -- stacks --------------------------------------------------------------------------------------


async def test_caps_count_live_stacks_only(store: Store) -> None:
    caps = Caps(live_stacks=2, per_service=1)
    assert await store.reserve_stack(stack_record("a", service="web"), caps) is None
    assert await store.reserve_stack(stack_record("a", service="web"), caps) is None  # ours
    assert await store.reserve_stack(stack_record("b", service="web"), caps) == (
        "max_stacks_per_service=1"
    )
    assert await store.reserve_stack(stack_record("c", service="db"), caps) is None
    assert await store.reserve_stack(stack_record("d", service="q"), caps) == "max_live_stacks=2"
    await store.touch_stack("proj", "a", operation="up", now=NOW, status=StackStatus.FAILED)
    await store.touch_stack("proj", "c", operation="destroy", now=NOW, status=StackStatus.DESTROYED)
    # A failed or destroyed stack holds no slot, and a new reservation takes its record over.
    assert await store.reserve_stack(stack_record("b", service="web"), caps) is None
    assert await store.reserve_stack(stack_record("a", service="q"), caps) is None
    again = await store.get_stack("proj", "a")
    assert again is not None and again.status == StackStatus.PROVISIONING
    listed = {s.stack for s in await store.list_stacks()}
    assert listed == {"a", "b"}
    assert {s.stack for s in await store.list_stacks(include_destroyed=True)} == {"a", "b", "c"}


async def test_a_cap_per_playbook_counts_that_playbook_s_stacks(store: Store) -> None:
    caps = Caps(per_playbook=1)
    assert await store.reserve_stack(stack_record("a"), caps) is None
    assert await store.reserve_stack(replace(stack_record("b"), playbook="pb2"), caps) is None
    assert await store.reserve_stack(stack_record("c"), caps) == "max_stacks_per_playbook=1"


async def test_a_stack_s_pending_jobs_and_recent_operations_are_counted(store: Store) -> None:
    first, _, done = await enqueue(store, job("a"), job("a", delay=60.0), job("other"))
    assert (await store.claim_next(NOW)) is not None
    assert (await store.claim_next(NOW)) is not None
    await store.finish(done, JobStatus.SUCCEEDED, NOW)
    assert await store.pending_jobs_for("proj", "a") == 2  # running and scheduled
    assert await store.pending_jobs_for("proj", "other") == 0
    await store.add_step(first, StepRecord("up", NOW - 61, 1.0, "succeeded"))
    await store.add_step(first, StepRecord("up", NOW - 1, 1.0, "succeeded"))
    assert await store.operations_since(NOW - 60) == 1


async def test_a_stack_s_latest_jobs_come_newest_first_whatever_their_status(store: Store) -> None:
    ids = await enqueue(store, job("a"), job("other"), job("a"), job("a", project="p2"), job("a"))
    a1, other, a2, _, a3 = ids
    for _ in range(2):  # a1 runs and fails; `other` runs and stays running
        claimed = await store.claim_next(NOW)
        assert claimed is not None
        if claimed.id == a1:
            await store.finish(a1, JobStatus.FAILED, NOW, error="boom")
    assert (await store.claim_next(NOW)) is not None  # a2 runs
    assert await store.request_cancel(a3, NOW) is not None  # a3 cancelled while queued

    latest = await store.latest_jobs_of("proj", "a", 10)
    assert [(j.id, j.status) for j in latest] == [
        (a3, JobStatus.CANCELLED),
        (a2, JobStatus.RUNNING),
        (a1, JobStatus.FAILED),
    ]
    assert [j.id for j in await store.latest_jobs_of("proj", "a", 2)] == [a3, a2]
    assert [j.id for j in await store.latest_jobs_of("proj", "other", 5)] == [other]
    assert await store.latest_jobs_of("proj", "none", 5) == []


# -- retention -----------------------------------------------------------------------------------


async def test_prune_deletes_only_what_finished_before_the_cutoff(store: Store) -> None:
    old, cutoff, recent = NOW, NOW + 1000, NOW + 2000
    ids = {}
    for name in ("done", "running", "waiting", "late", "queued"):
        (ids[name],) = await enqueue(store, job(name), incident=f"Q-{name}", at=old)
    for name in ("done", "running", "waiting", "late"):  # claimed in arrival order
        claimed = await store.claim_next(old)
        assert claimed is not None and claimed.id == ids[name]
    await store.add_step(ids["done"], StepRecord("up", old, 1.0, "succeeded"))
    await store.finish(ids["done"], JobStatus.SUCCEEDED, old)
    await store.finish(ids["late"], JobStatus.FAILED, recent)  # finished after the cutoff
    await store.await_approval(ids["waiting"], {"changes": {}}, old)
    counts = await store.prune(cutoff)
    assert counts["jobs"] == 1 and counts["steps"] == 1 and counts["deliveries"] == 1
    remaining = {j.id for j in await store.list_jobs(limit=100)}
    assert remaining == {ids[n] for n in ("queued", "running", "waiting", "late")}
    assert await store.incident("Q-done") is None
    assert await store.incident("Q-late") is not None
    assert await store.prune(cutoff) == dict.fromkeys(counts, 0)


async def test_prune_forgets_destroyed_stacks_and_resolved_incidents(store: Store) -> None:
    assert await store.reserve_stack(stack_record("gone", "QGONE"), Caps()) is None
    assert await store.reserve_stack(stack_record("live", "QLIVE"), Caps()) is None
    await store.touch_stack(
        "proj", "gone", operation="destroy", now=NOW, status=StackStatus.DESTROYED
    )
    await store.record_delivery(delivery("QGONE", "incident.resolved"), [])
    counts = await store.prune(NOW + 1)
    assert counts["stacks"] == 1 and counts["incidents"] == 1 and counts["deliveries"] == 1
    assert await store.incident("QGONE") is None
    assert await store.get_stack("proj", "gone") is None
    assert await store.get_stack("proj", "live") is not None
