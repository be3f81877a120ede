"""The runner and its job stacks over a real SQLite store and the in-memory stack operations: order,
retries, deadlines, cancels, deferred config, destroy, caps and approval, without the Pulumi CLI."""

import asyncio
import dataclasses
import errno
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from responder import runner as runner_module
from responder.events import Event, Incident
from responder.logs import Redactor
from responder.playbook import Context, Playbook, PlaybookFunc
from responder.runner import Runner
from responder.stacks import (
    CLIError,
    OperationCancelled,
    Secret,
    StackLockedError,
    StackNotFoundError,
    StackTarget,
)
from responder.store import (
    Caps,
    Job,
    JobStatus,
    NewDelivery,
    NewJob,
    StackStatus,
    StoreUnavailable,
)
from responder.store.sqlite import SQLiteStore
from tests.fakes import FakeOperations
from tests.helpers import FakeClock, LogCapture, until

PROJECT = "fast"
PROGRAM = "tests.programs.slow:pulumi_program"


def book(func: PlaybookFunc, **options: Any) -> Playbook:
    """A playbook of `func` (jobs are stored directly here, so it needs no trigger)."""
    playbook = Playbook(func.__name__, func, [], project=PROJECT, program=PROGRAM)
    return dataclasses.replace(playbook, **options)


@dataclass
class Rig:
    """A runner over a fresh store and fake stacks, on a clock the test moves."""

    store: SQLiteStore
    ops: FakeOperations
    clock: FakeClock
    runner: Runner
    postmortem: Path
    _sent: int = 0

    async def enqueue(
        self,
        playbook: Playbook,
        stack: str = "s1",
        *,
        max_attempts: int = 1,
        params: dict[str, str] | None = None,
    ) -> int:
        self._sent += 1
        event = Event(
            id=f"e{self._sent}",
            source="manual",
            type="manual.run",
            resource_type="manual",
            incident=Incident(id=f"Q{stack.upper()}"),
        )
        delivery = NewDelivery.of(event, id=f"d{self._sent}", body=b"{}", received_at=self.clock())
        job = NewJob(
            playbook.name, playbook.project, stack, event, max_attempts, params=params or {}
        )
        [job_id] = (await self.store.record_delivery(delivery, [job])).job_ids
        return job_id

    async def job(self, job_id: int) -> Job:
        job = await self.store.get_job(job_id)
        assert job is not None
        return job

    def steps(self, job: Job) -> list[tuple[str, str]]:
        return [(s.step, s.outcome) for s in job.steps]

    async def until_final(self, *job_ids: int) -> list[Job]:
        """The jobs once all are final (the runner's own workers run them)."""
        async with asyncio.timeout(10):
            while True:
                jobs = [await self.job(i) for i in job_ids]
                if all(j.status.final for j in jobs):
                    return jobs
                await asyncio.sleep(0.01)


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[MakeRig]:
    stores: list[SQLiteStore] = []
    runners: list[Runner] = []

    async def make(
        playbooks: list[Playbook], *, replaces_on: frozenset[str] = frozenset(), **options: Any
    ) -> Rig:
        store = SQLiteStore(tmp_path / "responder.db")
        await store.open()
        stores.append(store)
        ops, clock = FakeOperations(replaces_on=replaces_on), FakeClock()
        settings: dict[str, Any] = {"workers": 1, "job_timeout": 30.0, "retry_backoff": 1.0}
        runner = Runner(
            store,
            ops,
            {p.name: p for p in playbooks},
            clock=clock,
            postmortem_dir=tmp_path / "postmortem",
            redactor=Redactor(),
            **{**settings, **options},
        )
        runners.append(runner)
        return Rig(store, ops, clock, runner, tmp_path / "postmortem")

    yield make
    for runner in runners:
        await runner.stop(grace=1)
    for store in stores:
        await store.close()


async def up(ctx: Context) -> None:
    await ctx.stack.set_config({"size": "1"})
    await ctx.stack.up()


async def test_jobs_for_one_stack_run_one_at_a_time_in_order(make_rig: MakeRig) -> None:
    started: list[tuple[str, int | None]] = []

    async def first(ctx: Context) -> None:
        started.append((ctx.stack.name, ctx.job_id))
        await ctx.stack.up()

    async def second(ctx: Context) -> None:
        started.append((ctx.stack.name, ctx.job_id))
        await ctx.stack.preview()

    rig = await make_rig([book(first), book(second)], workers=2)
    gate = rig.ops.gate("up")
    a = await rig.enqueue(book(first), "s1")
    b = await rig.enqueue(book(second), "s1")
    other = await rig.enqueue(book(second), "s2")
    await rig.runner.start()
    await asyncio.wait_for(gate.entered.wait(), 10)
    # The second worker is free, and runs the other stack's job; s1's next waits for s1.
    await rig.until_final(other)
    assert started == [("s1", a), ("s2", other)]
    assert (await rig.job(b)).status == JobStatus.QUEUED
    gate.release.set()
    jobs = await rig.until_final(a, b)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert started == [("s1", a), ("s2", other), ("s1", b)]
    assert rig.ops.ops("s1") == ["up", "preview"]
    assert all(c.call.held for c in rig.ops.calls)  # under the lock the runner took for the job


async def test_new_work_wakes_a_worker_that_was_still_looking_when_it_was_announced(
    make_rig: MakeRig,
) -> None:
    """Worker B is between its empty claim and its wait when two jobs are announced; worker A wakes
    first and takes one. The other must wake B at once, not after B's idle poll (5 s)."""
    started: list[int | None] = []

    async def holds(ctx: Context) -> None:
        started.append(ctx.job_id)
        await ctx.stack.up()

    rig = await make_rig([book(holds)], workers=2)
    rig.ops.gate("up")  # the first job keeps its worker busy
    looking, unblock = asyncio.Event(), asyncio.Event()
    next_due = rig.store.next_due
    calls = 0

    async def slow_first_look() -> float | None:
        nonlocal calls
        calls += 1
        if calls == 3:  # the first look after the test's wake-up below: worker B, held here
            looking.set()
            await unblock.wait()
        return await next_due()

    rig.store.next_due = slow_first_look  # type: ignore[method-assign]
    await rig.runner.start()
    await until(lambda: calls >= 2, "both workers found nothing and are waiting", timeout=5)
    rig.runner.notify()  # both look again: B is held in its look, A waits
    await asyncio.wait_for(looking.wait(), 5)
    await asyncio.sleep(0.05)  # A is waiting again
    first = await rig.enqueue(book(holds), "s1")
    second = await rig.enqueue(book(holds), "s2")
    rig.runner.notify()  # one announcement for both jobs: A takes one
    await until(lambda: bool(started), "the first job started", timeout=5)
    unblock.set()  # B finishes its look, having missed the announcement while in it
    # Far less than the 5 s idle poll:
    await until(lambda: len(started) >= 2, "the second job started", timeout=2)
    assert sorted(j for j in started if j is not None) == [first, second]


class ClaimCount:
    """Counts the rig's claims from now on (`count`, which a test may set back to 0)."""

    def __init__(self, rig: Rig) -> None:
        self.count = 0
        claim_next = rig.store.claim_next

        async def counted(now: float, token: str | None = None) -> Job | None:
            self.count += 1
            return await claim_next(now, token)

        rig.store.claim_next = counted  # type: ignore[method-assign]


async def test_one_job_wakes_one_idle_worker_and_a_burst_wakes_them_in_turn(
    make_rig: MakeRig,
) -> None:
    """Each woken worker costs a claim: a job announced to three idle workers is looked for by the
    one that takes it and the one it passes the word to, not by all three. Three jobs announced at
    once still all start, the word passed from worker to worker."""
    started: list[int | None] = []

    async def holds(ctx: Context) -> None:
        started.append(ctx.job_id)
        await ctx.stack.up()

    rig = await make_rig([book(holds)], workers=3)
    rig.ops.gate("up")
    claims = ClaimCount(rig)
    await rig.runner.start()
    await until(lambda: claims.count >= 3, "each worker looked once and found nothing", timeout=5)
    await asyncio.sleep(0.1)  # and waits
    claims.count = 0
    first = await rig.enqueue(book(holds), "s1")
    rig.runner.notify()
    await until(lambda: bool(started), "the job started", timeout=5)
    await asyncio.sleep(0.2)
    assert started == [first]
    assert claims.count == 2  # the worker that took it, and the one it woke, who found nothing
    burst = [await rig.enqueue(book(holds), f"s{i}") for i in (2, 3)]
    rig.runner.notify()
    # Far less than the 5 s idle poll:
    await until(lambda: len(started) >= 3, "the burst's jobs started", timeout=2)
    assert sorted(j for j in started if j is not None) == [first, *burst]


async def test_a_recovery_that_fails_its_job_wakes_a_worker_for_the_stack_s_next_job(
    make_rig: MakeRig,
) -> None:
    """A job recovered without attempts left is failed, which frees its stack: the job queued behind
    it starts at once, not at the idle worker's next poll (5 s)."""
    started: list[int | None] = []

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)])
    interrupted = await rig.enqueue(book(note), "s1")  # one attempt: its recovery fails it
    claimed = await rig.store.claim_next(rig.clock())  # running here when this node lost it
    assert claimed is not None and claimed.id == interrupted
    behind = await rig.enqueue(book(note), "s1")
    await rig.runner.start()
    await asyncio.sleep(0.2)  # the worker finds nothing it may run, and waits
    assert started == []
    rig.runner.leases.hold(claimed)  # as the lease keeper does for a job taken over
    await rig.runner._recover_one(claimed)
    assert (await rig.job(interrupted)).status == JobStatus.FAILED
    await until(lambda: bool(started), "the job behind it started", timeout=2)
    assert started == [behind]


async def test_a_worker_woken_for_a_job_that_fails_to_claim_passes_the_word_on(
    make_rig: MakeRig,
) -> None:
    """Its loop logs the error and pauses; another idle worker takes the job at once."""
    started: list[int | None] = []

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)], workers=3)
    claims = 0
    claim_next = rig.store.claim_next

    async def fails_once(now: float, token: str | None = None) -> Job | None:
        nonlocal claims
        claims += 1
        if claims == 4:  # the first claim after the announcement below
            raise RuntimeError("a fault of the runner, not of the store")
        return await claim_next(now, token)

    rig.store.claim_next = fails_once  # type: ignore[method-assign]
    await rig.runner.start()
    await until(lambda: claims >= 3, "each worker looked once and found nothing", timeout=5)
    await asyncio.sleep(0.1)
    job_id = await rig.enqueue(book(note), "s1")
    rig.runner.notify()
    # Far less than the failed worker's pause and the idle poll:
    await until(lambda: bool(started), "another worker took the job", timeout=2)
    assert started == [job_id]


def gate_claims(rig: Rig) -> tuple[list[Job | None], asyncio.Event]:
    """Claims that commit, then wait for the returned event before they answer: a store slow to
    answer. The list gets what each claim took, once taken."""
    taken: list[Job | None] = []
    gate = asyncio.Event()
    claim_next = rig.store.claim_next

    async def slow(now: float, token: str | None = None) -> Job | None:
        job = await claim_next(now, token)
        taken.append(job)
        await gate.wait()
        return job

    rig.store.claim_next = slow  # type: ignore[method-assign]
    return taken, gate


async def test_a_claim_the_stop_cancelled_is_handed_back_unstarted(make_rig: MakeRig) -> None:
    """The stop cancels a worker whose claim has committed but not answered: the job goes back to
    the queue as it was, instead of staying `running` for the next start to repair."""
    started: list[int | None] = []

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)])
    job_id = await rig.enqueue(book(note))
    taken, gate = gate_claims(rig)
    await rig.runner.start()
    await until(lambda: any(taken), "the worker claimed the job", timeout=5)
    stopping = asyncio.create_task(rig.runner.stop(grace=1))
    await asyncio.sleep(0.2)
    assert not stopping.done()  # it waits for the claim's answer
    gate.set()
    await asyncio.wait_for(stopping, 5)
    job = await rig.job(job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 0 and job.started_at is None
    assert started == []


async def test_a_claim_handed_back_after_its_cancel_was_asked_ends_cancelled(
    make_rig: MakeRig, logs: LogCapture
) -> None:
    """Cancelled while its claim had not answered, then handed back by the stop: the job ends
    cancelled there, unstarted, instead of waiting in the queue for a claim to cancel it."""
    started: list[int | None] = []

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)])
    job_id = await rig.enqueue(book(note))
    taken, gate = gate_claims(rig)
    counted = {"playbook": "note", "status": "cancelled"}
    before = REGISTRY.get_sample_value("responder_jobs_finished_total", counted) or 0.0
    await rig.runner.start()
    await until(lambda: any(taken), "the worker claimed the job", timeout=5)
    asked = await rig.runner.cancel(job_id)
    assert asked is not None and asked.status == JobStatus.RUNNING and asked.cancel_requested
    stopping = asyncio.create_task(rig.runner.stop(grace=1))
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.wait_for(stopping, 5)
    job = await rig.job(job_id)
    assert (job.status, job.attempts, job.error) == (
        JobStatus.CANCELLED,
        0,
        "cancelled by request",
    )
    assert started == []
    [cancelled] = logs.events("job.cancelled")
    assert (cancelled["job_id"], cancelled["playbook"]) == (job_id, "note")
    after = REGISTRY.get_sample_value("responder_jobs_finished_total", counted)
    assert after == before + 1


@dataclass
class Stopping:
    """A stop under way while the first job drains and a second job's claim waits to answer."""

    rig: Rig
    first: int
    second: int
    started: list[int | None]
    drained: asyncio.Event  # set: the first job ends
    gate: asyncio.Event  # set: the claim answers
    stop: asyncio.Task[None]


async def stop_while_a_claim_waits(make_rig: MakeRig) -> Stopping:
    started: list[int | None] = []
    drained = asyncio.Event()

    async def slow(ctx: Context) -> None:
        started.append(ctx.job_id)
        await drained.wait()

    rig = await make_rig([book(slow)], workers=2)
    first = await rig.enqueue(book(slow), "s1")
    taken, gate = gate_claims(rig)
    gate.set()
    await rig.runner.start()
    await until(lambda: started == [first], "the first job runs", timeout=5)
    gate.clear()
    second = await rig.enqueue(book(slow), "s2")
    rig.runner.notify()
    await until(lambda: any(j is not None and j.id == second for j in taken), "claimed", timeout=5)
    stop = asyncio.create_task(rig.runner.stop(grace=10))
    await asyncio.sleep(0.1)
    return Stopping(rig, first, second, started, drained, gate, stop)


async def test_a_job_claimed_while_the_runner_drains_is_handed_back_not_run(
    make_rig: MakeRig,
) -> None:
    """One worker's job is draining when another's claim answers: that job is not started (it
    would outlast the grace), but queued again."""
    stopping = await stop_while_a_claim_waits(make_rig)
    stopping.gate.set()  # the claim answers while the first job drains
    await asyncio.sleep(0.2)
    stopping.drained.set()
    await asyncio.wait_for(stopping.stop, 10)
    assert stopping.started == [stopping.first]
    assert (await stopping.rig.job(stopping.first)).status == JobStatus.SUCCEEDED
    job = await stopping.rig.job(stopping.second)
    assert job.status == JobStatus.QUEUED and job.attempts == 0


async def test_a_release_under_way_is_seen_through_when_the_stop_cancels_its_worker(
    make_rig: MakeRig,
) -> None:
    """The last draining job ends while another worker hands its claim back: the stop then cancels
    that worker, but the release still completes (bounded) before the stop returns."""
    stopping = await stop_while_a_claim_waits(make_rig)
    store = stopping.rig.store
    releasing, answer = asyncio.Event(), asyncio.Event()
    release = store.release

    async def slow_release(job_id: int, fence: int, now: float) -> JobStatus:
        releasing.set()
        await answer.wait()
        return await release(job_id, fence, now)

    store.release = slow_release  # type: ignore[method-assign]
    stopping.gate.set()
    await asyncio.wait_for(releasing.wait(), 5)
    stopping.drained.set()  # the drain ends: the stop cancels the releasing worker
    await asyncio.sleep(0.3)
    assert not stopping.stop.done()
    answer.set()
    await asyncio.wait_for(stopping.stop, 10)
    job = await stopping.rig.job(stopping.second)
    assert job.status == JobStatus.QUEUED and job.attempts == 0


async def test_a_claim_that_never_answers_does_not_hold_the_stop(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guard on the wait for the claim's answer: it is bounded."""
    monkeypatch.setattr(runner_module, "RELEASE_WAIT", 0.2)

    async def note(ctx: Context) -> None:
        pass

    rig = await make_rig([book(note)])
    job_id = await rig.enqueue(book(note))
    taken, _ = gate_claims(rig)  # never opened
    await rig.runner.start()
    await until(lambda: any(taken), "the worker claimed the job", timeout=5)
    await asyncio.wait_for(rig.runner.stop(grace=1), 2)
    # Left as the claim made it: the next start recovers it, as after a crash.
    assert (await rig.job(job_id)).status == JobStatus.RUNNING


async def test_a_worker_with_a_backlog_claims_each_next_job_with_the_last_one_s_result(
    make_rig: MakeRig,
) -> None:
    """One store call a job: after its first claim, a worker's next job comes with its result."""
    started: list[int | None] = []

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)])
    backlog = [await rig.enqueue(book(note), f"s{i}") for i in range(3)]
    claims = ClaimCount(rig)
    await rig.runner.start()
    jobs = await rig.until_final(*backlog)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 3
    assert started == backlog  # in arrival order, each once
    await asyncio.sleep(0.1)
    assert claims.count == 2  # the first job's, and one after the last result claimed nothing


@dataclass
class HeldResult:
    """Two jobs on two stacks, run by one worker: the first one's result, which claims the second,
    waits for `answer` before it reaches the store."""

    rig: Rig
    first: int
    second: int
    started: list[int | None]
    answer: asyncio.Event

    async def second_handed_back(self) -> None:
        """Only the first job ran, and succeeded; the second is queued again, unstarted."""
        assert self.started == [self.first]
        assert (await self.rig.job(self.first)).status == JobStatus.SUCCEEDED
        job = await self.rig.job(self.second)
        assert job.status == JobStatus.QUEUED and job.attempts == 0 and job.started_at is None


async def first_result_held(make_rig: MakeRig) -> HeldResult:
    """Started; returns once the first job's result (with its claim) waits."""
    started: list[int | None] = []

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)])
    first, second = await rig.enqueue(book(note), "s1"), await rig.enqueue(book(note), "s2")
    finishing, answer = asyncio.Event(), asyncio.Event()
    finish = rig.store.finish

    async def slow_finish(*args: Any, **kwargs: Any) -> Job | None:
        if kwargs.get("then_claim"):
            finishing.set()
            await answer.wait()
        return await finish(*args, **kwargs)

    rig.store.finish = slow_finish  # type: ignore[method-assign]
    await rig.runner.start()
    await asyncio.wait_for(finishing.wait(), 5)
    return HeldResult(rig, first, second, started, answer)


async def test_a_job_claimed_with_a_result_as_the_runner_stops_is_handed_back_not_run(
    make_rig: MakeRig,
) -> None:
    """A result under way when the stop begins claims the worker's next job: that job is queued
    again, unstarted, as a claim answering during the stop is."""
    held = await first_result_held(make_rig)
    stop = asyncio.create_task(held.rig.runner.stop(grace=5))
    await asyncio.sleep(0.1)
    held.answer.set()  # the result, and the claim of `second` with it, commit during the stop
    await asyncio.wait_for(stop, 10)
    await held.second_handed_back()


def answers_lost(rig: Rig, method: str) -> list[Any]:
    """The store's first call of `method` commits, then its answer is lost (a dropped connection,
    a store process gone after its commit): the caller sees the store unavailable, and retries.
    The list gets what that first call returned."""
    real = getattr(rig.store, method)
    lost: list[Any] = []

    async def commits_then_fails(*args: Any, **kwargs: Any) -> Any:
        answer = await real(*args, **kwargs)
        if not lost:
            lost.append(answer)
            raise StoreUnavailable("job store unavailable: the connection dropped")
        return answer

    setattr(rig.store, method, commits_then_fails)
    return lost


@pytest.mark.parametrize("method", ["claim_next", "finish"])
async def test_a_claim_whose_answer_was_lost_is_run_once_retried(
    make_rig: MakeRig, method: str, logs: LogCapture
) -> None:
    """The store took the claim (alone, or with the last job's result) but its answer was lost: the
    retry gets that job back and runs it, rather than claiming another and leaving the first
    running with nobody to run it. A retried result is no lost lease."""
    started: list[int | None] = []

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)])
    backlog = [await rig.enqueue(book(note), f"s{i}") for i in range(3)]
    lost = answers_lost(rig, method)
    await rig.runner.start()
    jobs = await rig.until_final(*backlog)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 3
    assert started == backlog
    assert lost and lost[0] is not None  # the lost answer carried a job
    assert not logs.events("job.lease_lost")


async def test_a_job_claimed_with_a_result_the_stop_cancelled_is_handed_back(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    """The stop's grace ends while a result (and the claim with it) is committed but unanswered:
    the answer is waited for, briefly, and the job claimed handed back unstarted. The job whose
    result it was ended as recorded: logged and counted as succeeded, not as interrupted."""
    monkeypatch.setattr(runner_module, "RELEASE_WAIT", 2.0)
    started: list[int | None] = []
    answer = asyncio.Event()

    async def note(ctx: Context) -> None:
        started.append(ctx.job_id)

    rig = await make_rig([book(note)])
    first, second = await rig.enqueue(book(note), "s1"), await rig.enqueue(book(note), "s2")
    finish, committed = rig.store.finish, asyncio.Event()

    async def unanswered(*args: Any, **kwargs: Any) -> Job | None:
        claimed = await finish(*args, **kwargs)
        committed.set()
        await answer.wait()
        return claimed

    rig.store.finish = unanswered  # type: ignore[method-assign]
    counted = {"playbook": "note", "status": "succeeded"}
    before = REGISTRY.get_sample_value("responder_jobs_finished_total", counted) or 0.0
    await rig.runner.start()
    await asyncio.wait_for(committed.wait(), 5)
    stop = asyncio.create_task(rig.runner.stop(grace=0.2))
    await asyncio.sleep(0.5)  # past the grace: the job's task is cancelled, its answer awaited
    assert not stop.done()
    answer.set()
    await asyncio.wait_for(stop, 5)
    assert started == [first]
    job = await rig.job(second)
    assert job.status == JobStatus.QUEUED and job.attempts == 0 and job.started_at is None
    assert (await rig.job(first)).status == JobStatus.SUCCEEDED
    assert [e["job_id"] for e in logs.events("job.succeeded")] == [first]
    assert not logs.events("job.interrupted")
    after = REGISTRY.get_sample_value("responder_jobs_finished_total", counted)
    assert after == before + 1


async def test_a_worker_cancelled_while_its_job_ends_hands_back_the_job_the_result_claimed(
    make_rig: MakeRig,
) -> None:
    """A worker cancelled while its job is still writing its result (the job itself is shielded
    and goes on): the job its result claimed is handed back unstarted as the worker ends, not left
    running with nobody to run it."""
    held = await first_result_held(make_rig)
    (worker,) = held.rig.runner._loops
    worker.cancel()
    await asyncio.sleep(0.05)
    assert not worker.done()  # it waits for its job, which is not cancelled
    held.answer.set()
    await asyncio.wait_for(asyncio.gather(worker, return_exceptions=True), 5)
    assert worker.cancelled()
    await held.second_handed_back()


async def test_a_result_written_while_the_runner_stops_claims_nothing(
    make_rig: MakeRig, logs: LogCapture
) -> None:
    """A job that ends during the stop's grace writes its result alone: no next job is claimed
    only to be handed back."""
    release = asyncio.Event()
    started: list[int | None] = []

    async def held(ctx: Context) -> None:
        started.append(ctx.job_id)
        await release.wait()

    rig = await make_rig([book(held)])
    first, second = await rig.enqueue(book(held), "s1"), await rig.enqueue(book(held), "s2")
    claims = ClaimCount(rig)
    finish, asked = rig.store.finish, list[Any]()

    async def seen(*args: Any, **kwargs: Any) -> Job | None:
        asked.append(kwargs.get("then_claim"))
        return await finish(*args, **kwargs)

    rig.store.finish = seen  # type: ignore[method-assign]
    await rig.runner.start()
    await until(lambda: started == [first], "the first job started", timeout=5)
    stop = asyncio.create_task(rig.runner.stop(grace=5))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(stop, 10)
    assert asked == [None] and claims.count == 1  # the first job's claim only
    assert (await rig.job(first)).status == JobStatus.SUCCEEDED
    job = await rig.job(second)
    assert job.status == JobStatus.QUEUED and job.attempts == 0
    assert not logs.events("job.released")


async def test_cancelling_a_waiting_retry_lets_the_next_job_on_its_stack_run_at_once(
    make_rig: MakeRig,
) -> None:
    started: list[int | None] = []

    async def up_once(ctx: Context) -> None:
        started.append(ctx.job_id)
        await ctx.stack.up()

    rig = await make_rig([book(up_once)], workers=2, retry_backoff=1000.0)
    rig.ops.fail("up", StackLockedError("locked by another update"), times=1)
    retrying = await rig.enqueue(book(up_once), "s1", max_attempts=2)
    behind = await rig.enqueue(book(up_once), "s1")
    await rig.runner.start()
    async with asyncio.timeout(5):
        while (await rig.job(retrying)).attempts < 1 or (
            await rig.job(retrying)
        ).status != JobStatus.QUEUED:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the retry waits for its time, and holds s1: both workers idle
    assert started == [retrying]
    await rig.runner.cancel(retrying)
    await until(lambda: len(started) >= 2, "the job behind the cancelled retry started", timeout=2)
    assert started == [retrying, behind]


async def test_a_retryable_error_is_retried_with_exponential_backoff(make_rig: MakeRig) -> None:
    rig = await make_rig([book(up)], retry_backoff=2.0)
    rig.ops.fail("up", StackLockedError("locked by another update"), times=3)
    job_id = await rig.enqueue(book(up), max_attempts=4)
    start = rig.clock.now

    assert await rig.runner.run_once() == job_id
    job = await rig.job(job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 1 and "locked" in (job.error or "")
    assert rig.steps(job) == [("set_config", "succeeded"), ("up", "failed")]
    waited = 0.0
    for attempt, delay in ((2, 2.0), (3, 4.0), (4, 8.0)):  # backoff * 2**(attempt - 2)
        assert job.not_before == start + waited + delay
        rig.clock.advance(delay - 0.1)
        assert await rig.runner.run_once() is None  # not due yet
        rig.clock.advance(0.1)
        waited += delay
        assert await rig.runner.run_once() == job_id
        job = await rig.job(job_id)
        assert job.attempts == attempt
    assert job.status == JobStatus.SUCCEEDED
    assert job.outputs == {"stack": "s1", "size": "1"}
    assert rig.ops.ops() == ["up", "up", "up", "up"]


async def test_an_operation_stopped_from_outside_is_retried_not_cancelled(
    make_rig: MakeRig, logs: LogCapture
) -> None:
    """A service manager stopping the daemon's whole process group signals the stack workers too
    (systemd's default): the operation ends cancelled, but nobody asked to cancel the job."""
    rig = await make_rig([book(up)], retry_backoff=0.0)
    rig.ops.fail("up", OperationCancelled("cancelled by SIGTERM", step="up"), times=1)
    job_id = await rig.enqueue(book(up), max_attempts=2)
    assert await rig.runner.run_once() == job_id
    job = await rig.job(job_id)
    assert job.status == JobStatus.QUEUED and "stopped from outside" in (job.error or "")
    assert logs.events("job.cancelled") == []
    assert await rig.runner.run_once() == job_id
    assert (await rig.job(job_id)).status == JobStatus.SUCCEEDED


async def test_retries_stop_at_max_attempts_and_permanent_errors_are_not_retried(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig([book(up)], retry_backoff=0.0)
    rig.ops.fail("up", CLIError("the CLI fell over"), times=5)
    retried = await rig.enqueue(book(up), "s1", max_attempts=2)
    assert await rig.runner.run_once() == retried
    assert await rig.runner.run_once() == retried
    job = await rig.job(retried)
    assert job.status == JobStatus.FAILED and job.attempts == 2 and "fell over" in (job.error or "")

    rig.ops.fail("refresh", StackNotFoundError("no such stack"))

    async def refresh(ctx: Context) -> None:
        await ctx.stack.refresh()

    rig.runner.playbooks = {"refresh": book(refresh)}
    permanent = await rig.enqueue(book(refresh), "s2", max_attempts=3)
    assert await rig.runner.run_once() == permanent
    job = await rig.job(permanent)
    assert job.status == JobStatus.FAILED and job.attempts == 1


async def test_the_job_timeout_stops_an_operation_and_records_the_stopped_step(
    make_rig: MakeRig,
) -> None:
    after: list[str] = []

    async def hangs(ctx: Context) -> None:
        await ctx.stack.set_config({"size": "1"})
        await ctx.stack.up()  # never finishes: its gate is never opened
        after.append("up returned")

    rig = await make_rig([book(hangs)], job_timeout=0.2)
    rig.ops.gate("up")
    job_id = await rig.enqueue(book(hangs))
    await rig.runner.run_once()
    job = await rig.job(job_id)
    assert job.status == JobStatus.FAILED and "timeout" in (job.error or ""), job.error
    assert rig.steps(job) == [("set_config", "succeeded"), ("up", "failed")]
    assert "timeout" in (job.steps[-1].error or "")
    assert after == []
    record = await rig.store.get_stack(PROJECT, "s1")
    assert record is not None and record.status == StackStatus.FAILED  # its cap slot is freed


async def test_cancelling_a_running_job_stops_its_operation(make_rig: MakeRig) -> None:
    after: list[str] = []

    async def hangs(ctx: Context) -> None:
        await ctx.stack.up()
        after.append("up returned")

    rig = await make_rig([book(hangs)])
    gate = rig.ops.gate("up")
    job_id = await rig.enqueue(book(hangs))
    running = asyncio.create_task(rig.runner.run_once())
    await asyncio.wait_for(gate.entered.wait(), 10)
    cancelled = await rig.runner.cancel(job_id)
    assert cancelled is not None and cancelled.cancel_requested
    await asyncio.wait_for(running, 10)
    job = await rig.job(job_id)
    assert job.status == JobStatus.CANCELLED and job.error == "cancelled by request"
    assert rig.steps(job) == [("up", "failed")] and after == []


async def test_config_is_checked_at_once_and_sent_with_the_next_operation(
    make_rig: MakeRig,
) -> None:
    async def configured(ctx: Context) -> None:
        await ctx.stack.set_config({"size": "1"})
        await ctx.stack.set_config({"token": Secret("a-long-enough-secret")})
        await ctx.stack.up()
        await ctx.stack.set_config({"size": "2"})  # nothing follows: applied as the job ends

    refusals: list[str] = []

    async def short_secret(ctx: Context) -> None:
        try:
            await ctx.stack.set_config({"token": Secret("hunter2")})
        except ValueError as e:  # raised here, where the playbook set it
            refusals.append(str(e))
        await ctx.stack.up()

    rig = await make_rig([book(configured), book(short_secret)])
    done = await rig.enqueue(book(configured))
    await rig.runner.run_once()
    job = await rig.job(done)
    assert job.status == JobStatus.SUCCEEDED, job.error
    [sent_with_up, flushed] = rig.ops.calls
    assert (sent_with_up.op, sent_with_up.config) == (
        "up",
        {"size": "1", "token": "a-long-enough-secret"},
    )
    assert isinstance((sent_with_up.config or {})["token"], Secret)
    assert sent_with_up.tags is not None  # the job reserved the stack it creates
    assert (flushed.op, flushed.config) == ("set_config", {"size": "2"})
    assert rig.steps(job) == [
        ("set_config", "succeeded"),
        ("up", "succeeded"),
        ("set_config", "succeeded"),
    ]
    assert job.outputs == {"stack": "s1", "size": "1", "token": "[secret]"}

    refused = await rig.enqueue(book(short_secret), "s2")
    await rig.runner.run_once()
    assert (await rig.job(refused)).status == JobStatus.SUCCEEDED
    assert len(refusals) == 1 and "'token' is shorter" in refusals[0]
    assert "hunter2" not in refusals[0]
    [up_s2] = [c for c in rig.ops.calls if c.target.name == "s2"]
    assert (up_s2.op, up_s2.config) == ("up", None)  # the refused config was never kept


async def test_a_stack_created_by_config_alone_or_a_refresh_carries_the_jobs_tags(
    make_rig: MakeRig,
) -> None:
    async def config_only(ctx: Context) -> None:
        await ctx.stack.set_config({"size": "1"})  # applied as the job ends: that creates the stack

    async def refresh_first(ctx: Context) -> None:
        await ctx.stack.set_config({"size": "1"})
        await ctx.stack.refresh()  # the config sent with it creates the stack

    rig = await make_rig([book(config_only), book(refresh_first)])
    jobs = [
        await rig.enqueue(book(config_only), "s1"),
        await rig.enqueue(book(refresh_first), "s2"),
    ]
    for _ in jobs:
        await rig.runner.run_once()
    for job_id, stack, playbook in zip(
        jobs, ("s1", "s2"), ("config_only", "refresh_first"), strict=True
    ):
        job = await rig.job(job_id)
        assert job.status == JobStatus.SUCCEEDED, job.error
        tags = rig.ops.stacks[f"{PROJECT}/{stack}"].tags
        assert tags["responder:playbook"] == playbook
        assert tags["responder:incident"] == f"Q{stack.upper()}"


async def test_destroy_exports_first_and_a_stack_already_gone_is_recorded_destroyed(
    make_rig: MakeRig,
) -> None:
    async def destroy(ctx: Context) -> None:
        await ctx.stack.destroy()

    async def tolerant(ctx: Context) -> None:
        result = await ctx.stack.destroy(missing_ok=True)
        assert result.details == {"already_gone": True}

    playbooks = [book(up), book(destroy, allow_destroy=True), book(tolerant, allow_destroy=True)]
    rig = await make_rig(playbooks)
    for name in ("s1", "s2", "s3"):
        await rig.enqueue(playbooks[0], name)
        await rig.runner.run_once()

    destroyed = await rig.enqueue(playbooks[1], "s1")
    await rig.runner.run_once()
    job = await rig.job(destroyed)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert rig.steps(job) == [("export", "succeeded"), ("destroy", "succeeded")]
    [call] = [c for c in rig.ops.calls if c.op == "destroy"]
    assert call.remove and call.export_to is not None and call.export_to.parent == rig.postmortem
    record = await rig.store.get_stack(PROJECT, "s1")
    assert record is not None and record.status == StackStatus.DESTROYED
    assert record.export_path == str(call.export_to)
    assert json.loads(call.export_to.read_text())["config"] == {"size": "1"}

    # s2 and s3 vanish from the backend behind the store's back.
    del rig.ops.stacks[f"{PROJECT}/s2"], rig.ops.stacks[f"{PROJECT}/s3"]
    strict = await rig.enqueue(playbooks[1], "s2")
    await rig.runner.run_once()
    job = await rig.job(strict)
    assert job.status == JobStatus.FAILED and "no stack named" in (job.error or "")
    lenient = await rig.enqueue(playbooks[2], "s3")
    await rig.runner.run_once()
    job = await rig.job(lenient)
    assert job.status == JobStatus.SUCCEEDED, job.error
    for name in ("s2", "s3"):
        record = await rig.store.get_stack(PROJECT, name)
        assert record is not None and record.status == StackStatus.DESTROYED, name


async def test_a_stack_over_a_cap_is_refused_before_anything_runs(make_rig: MakeRig) -> None:
    rig = await make_rig([book(up)], caps=Caps(live_stacks=1))
    first = await rig.enqueue(book(up), "s1")
    await rig.runner.run_once()
    assert (await rig.job(first)).status == JobStatus.SUCCEEDED
    over = await rig.enqueue(book(up), "s2")
    await rig.runner.run_once()
    job = await rig.job(over)
    assert job.status == JobStatus.REFUSED and "live_stacks" in (job.error or ""), job.error
    assert job.steps == () and rig.ops.ops("s2") == []
    # The stack that is already live may still be updated.
    again = await rig.enqueue(book(up), "s1")
    await rig.runner.run_once()
    assert (await rig.job(again)).status == JobStatus.SUCCEEDED


async def test_a_risky_change_waits_for_approval_of_exactly_its_plan(make_rig: MakeRig) -> None:
    async def resize(ctx: Context) -> None:
        await ctx.stack.set_config({k: ctx.params.get(k, "1") for k in ("size", "color")})
        await ctx.stack.up()

    gated = book(resize, approve_changes=True, params=("size", "color"))
    rig = await make_rig([gated], replaces_on=frozenset({"size"}))
    # Creating, or updating in place, is not risky: no approval needed.
    for params in ({}, {"color": "2"}):
        job_id = await rig.enqueue(gated, params=params)
        await rig.runner.run_once()
        assert (await rig.job(job_id)).status == JobStatus.SUCCEEDED
    assert rig.ops.ops() == ["preview", "up", "preview", "up"]

    risky = await rig.enqueue(gated, params={"size": "2", "color": "2"})
    await rig.runner.run_once()
    job = await rig.job(risky)
    assert job.status == JobStatus.AWAITING_APPROVAL
    assert job.plan is not None and job.plan["steps"] == [{"op": "replace", "urn": "resource"}]
    assert rig.ops.ops()[4:] == ["preview"]  # no up for the unapproved change
    stack = rig.ops.stacks[f"{PROJECT}/s1"]
    assert stack.deployed == {"size": "1", "color": "2"}

    await rig.store.decide(risky, True, rig.clock())
    await rig.runner.run_once()
    job = await rig.job(risky)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert stack.deployed == {"size": "2", "color": "2"}


async def test_recovery_repairs_the_stack_of_an_interrupted_job_and_retries_it(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig([book(up)])
    job_id = await rig.enqueue(book(up), max_attempts=2)
    crashed = SQLiteStore(rig.store.path)  # the daemon before its crash: another node
    await crashed.open()
    claimed = await crashed.claim_next(rig.clock())  # the crash leaves it running
    await crashed.close()
    assert claimed is not None and claimed.id == job_id
    await rig.runner.recover()
    assert rig.ops.recovered == [StackTarget("s1", PROJECT, PROGRAM)]
    job = await rig.job(job_id)
    assert job.status == JobStatus.QUEUED and "interrupted" in (job.error or "")
    assert await rig.runner.run_once() == job_id
    assert (await rig.job(job_id)).status == JobStatus.SUCCEEDED


async def test_recovery_repairs_the_stack_of_a_job_whose_playbook_is_gone(
    make_rig: MakeRig,
) -> None:
    """A playbook removed before the restart: its interrupted job's stack is still locked, and its
    processes alive. The stack is repaired by its project's program; the job, which cannot run
    again, fails."""

    async def removed(ctx: Context) -> None:
        await ctx.stack.up()

    rig = await make_rig([book(up)])  # `removed` is not loaded any more
    job_id = await rig.enqueue(book(removed), max_attempts=2)
    crashed = SQLiteStore(rig.store.path)
    await crashed.open()
    assert await crashed.claim_next(rig.clock()) is not None
    await crashed.close()
    await rig.runner.recover()
    assert rig.ops.recovered == [StackTarget("s1", PROJECT, PROGRAM)]
    job = await rig.job(job_id)
    assert job.status == JobStatus.FAILED and "interrupted" in (job.error or "")


async def test_a_recovery_that_fails_on_a_fault_of_this_node_is_tried_again(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    """A full disk while the stack is repaired: the recovery is logged and tried again, without
    holding up the start, not left with the job `running` and its stack blocked until a restart."""
    rig = await make_rig([book(up)])
    job_id = await rig.enqueue(book(up), max_attempts=2)
    crashed = SQLiteStore(rig.store.path)  # the daemon before its crash
    await crashed.open()
    assert await crashed.claim_next(rig.clock()) is not None
    await crashed.close()
    monkeypatch.setattr(runner_module, "RECOVERY_RETRY", 0.2)
    recover, faults = rig.ops.recover, [OSError(errno.ENOSPC, "No space left on device")]

    async def full_disk_once(target: StackTarget) -> None:
        if faults:
            raise faults.pop()
        await recover(target)

    monkeypatch.setattr(rig.ops, "recover", full_disk_once)
    await asyncio.wait_for(rig.runner.recover(), 0.15)  # its first try only
    [failed] = logs.events("job.recovery_failed")
    assert failed["job_id"] == job_id and failed["retry_in_seconds"] == 0.2
    assert (await rig.job(job_id)).status == JobStatus.RUNNING  # held meanwhile

    async def queued() -> bool:
        return (await rig.job(job_id)).status == JobStatus.QUEUED

    await until(queued, "the recovery tried again", 5)
    assert rig.ops.recovered == [StackTarget("s1", PROJECT, PROGRAM)]
    assert await rig.runner.run_once() == job_id
    assert (await rig.job(job_id)).status == JobStatus.SUCCEEDED


async def test_a_stop_does_not_wait_out_the_pause_of_a_failing_recovery(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make_rig([book(up)])
    job_id = await rig.enqueue(book(up), max_attempts=2)
    crashed = SQLiteStore(rig.store.path)
    await crashed.open()
    assert await crashed.claim_next(rig.clock()) is not None
    await crashed.close()

    async def full_disk(_target: StackTarget) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rig.ops, "recover", full_disk)
    monkeypatch.setattr(runner_module, "RECOVERY_RETRY", 60.0)
    await rig.runner.recover()
    await asyncio.wait_for(rig.runner.stop(grace=30), 2)  # not 30 s, nor the minute's pause
    assert not rig.runner.leases.recoveries
    assert (await rig.job(job_id)).status == JobStatus.RUNNING  # for the next start


async def test_a_stop_ends_while_the_store_does_not_take_an_interrupted_jobs_records(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    """SIGTERM past the grace interrupts a job whose stopped step must then be recorded; a store
    that does not take it (its file locked by another process) held the stop, and the daemon,
    forever. It gives up after INTERRUPTED_WAIT and leaves the job `running`, for the next start
    to recover."""
    rig = await make_rig([book(up)])
    gate = rig.ops.gate("up")
    job_id = await rig.enqueue(book(up))
    await rig.runner.start()
    rig.runner.notify()
    await asyncio.wait_for(gate.entered.wait(), 5)

    async def unavailable(*_args: Any, **_kwargs: Any) -> None:
        raise StoreUnavailable("job store unavailable: database is locked")

    monkeypatch.setattr(rig.store, "add_step", unavailable)
    monkeypatch.setattr(runner_module, "INTERRUPTED_WAIT", 0.5)
    await asyncio.wait_for(rig.runner.stop(grace=0.1), 3)  # 0.1 + 0.5, and the cancels
    assert not rig.runner._running
    [gave_up] = logs.events("runner.stop_gave_up")
    assert gave_up["job_ids"] == [job_id] and gave_up["level"] == "error"
    assert (await rig.job(job_id)).status == JobStatus.RUNNING  # the next start recovers it


async def test_a_stored_error_never_quotes_a_registered_secret(make_rig: MakeRig) -> None:
    secret = "s3cret-value-registered-by-the-stack-operations"

    async def leaky(ctx: Context) -> None:
        raise RuntimeError(f"could not reach https://user:{secret}@db.internal")

    rig = await make_rig([book(leaky)])
    rig.runner.redactor.add(secret)
    job_id = await rig.enqueue(book(leaky))
    await rig.runner.run_once()
    job = await rig.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "db.internal" in job.error
    assert secret not in job.error and "[secret]" in job.error


async def test_config_that_is_not_json_is_refused_where_the_playbook_sets_it(
    make_rig: MakeRig,
) -> None:
    refusals: list[str] = []

    async def odd_config(ctx: Context) -> None:
        try:
            await ctx.stack.set_config({"size": "1", "when": {1, 2}})
        except ValueError as e:
            refusals.append(str(e))
        await ctx.stack.set_config({"count": 3, "labels": {"team": "db"}})
        await ctx.stack.up()

    rig = await make_rig([book(odd_config)])
    job_id = await rig.enqueue(book(odd_config))
    await rig.runner.run_once()
    job = await rig.job(job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert refusals == ["config 'when' is a set: give a string or a JSON value"]
    [sent] = rig.ops.calls
    assert sent.config == {"count": 3, "labels": {"team": "db"}}  # nothing of the refused call
    assert rig.ops.stacks[f"{PROJECT}/s1"].config == {"count": "3", "labels": '{"team": "db"}'}


def test_claim_tokens_are_never_repeated_in_a_process() -> None:
    """A retried claim finds its job by its token: two claims of one node must never share one."""
    tokens = [runner_module.new_claim_token() for _ in range(10_000)]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) <= 64 and t.isascii() for t in tokens)
