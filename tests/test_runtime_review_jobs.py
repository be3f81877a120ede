"""A job's deadline and a cancel reach every part of its run (its playbook's own code, an operation
still waiting for its worker, a cancel that came before the runner had the job in hand), and a
secret too short to be masked is refused by name."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from responder.events import Event, Incident
from responder.logs import Redactor
from responder.playbook import Context, on, playbook
from responder.runner import Runner
from responder.stacks import (
    OperationCancelled,
    PulumiEnvironment,
    PulumiOperations,
    Secret,
    StackTarget,
    check_config,
)
from responder.stacks.interface import SECRET_MIN_LENGTH
from responder.store import JobStatus, NewDelivery, NewJob
from responder.store.sqlite import SQLiteStore
from tests.helpers import API_TOKEN, Client, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
SLOW = "tests.programs.slow:pulumi_program"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SHORT = "hunter2"  # a secret too short for the redactor to mask


async def test_the_job_timeout_covers_the_playbooks_own_code(
    make_client: MakeClient, logs: LogCapture
) -> None:
    @on("incident.triggered")
    async def dawdle(ctx: Context) -> None:
        """Spends a minute in its own code, with no operation."""
        await asyncio.sleep(60)

    client = await make_client([dawdle], job_timeout=2.0, job_max_attempts=1)
    started = asyncio.get_running_loop().time()
    await client.deliver(pd_event("incident.triggered", "QDAWDLE"), "dawdle-t")
    [job] = await client.wait_for_jobs(timeout=20)
    assert asyncio.get_running_loop().time() - started < 15
    assert job.status == JobStatus.FAILED
    assert "job exceeded its 2s timeout" in (job.error or ""), job.error
    [failed] = logs.events("job.failed")
    assert failed["error_kind"] == "timeout"


async def test_a_cancel_stops_the_playbooks_own_code_even_if_it_swallows_it(
    make_client: MakeClient,
) -> None:
    started = asyncio.Event()
    swallowed: list[str] = []

    @on("incident.triggered")
    async def stubborn(ctx: Context) -> None:
        """Waits a minute, and carries on as if nothing happened when interrupted."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.append(ctx.playbook)

    client = await make_client([stubborn])
    await client.deliver(pd_event("incident.triggered", "QSTOP"), "stop-t")
    await asyncio.wait_for(started.wait(), 30)
    answer = await client.http.post("/jobs/1/cancel", headers=AUTH)
    assert answer.status == 202
    [job] = await client.wait_for_jobs(timeout=15)
    assert swallowed == ["stubborn"]  # it was interrupted at once, not after its minute
    assert job.status == JobStatus.CANCELLED and job.error == "cancelled by request"


@dataclass
class OneJob:
    """A store holding one queued `manual.work` job, a runner on it, and what the job's playbook ran."""

    store: SQLiteStore
    runner: Runner
    ran: list[int | None]


@pytest.fixture
async def one_job(tmp_path: Path, pulumi_env: PulumiEnvironment) -> AsyncIterator[OneJob]:
    ran: list[int | None] = []

    @on("manual.work")
    async def work(ctx: Context) -> None:
        """Records that it ran."""
        ran.append(ctx.job_id)

    store = SQLiteStore(tmp_path / "responder.db")
    await store.open()
    runner = Runner(
        store, PulumiOperations(pulumi_env), {"work": work}, workers=1, job_timeout=30,
        retry_backoff=0.1, postmortem_dir=tmp_path / "postmortem", redactor=Redactor(),
    )  # fmt: skip
    event = Event(
        id="w", source="manual", type="manual.work", resource_type="manual",
        incident=Incident(id="QEARLY"),
    )  # fmt: skip
    delivery = NewDelivery.of(event, id="w", body=b"{}", received_at=0.0)
    await store.record_delivery(delivery, [NewJob("work", "burner", "s", event, 3)])
    try:
        yield OneJob(store, runner, ran)
    finally:
        await store.close()


async def test_a_cancel_before_the_runner_holds_the_job_is_not_lost(one_job: OneJob) -> None:
    store, runner = one_job.store, one_job.runner
    claimed = await store.claim_next(1.0)
    assert claimed is not None and not claimed.cancel_requested
    # The cancel comes after the claim and before the runner has set the job up: the claim's
    # copy of the job says nothing of it.
    cancelled = await runner.cancel(claimed.id)
    assert cancelled is not None and cancelled.cancel_requested
    await runner._run(claimed)
    assert runner._early_cancels == set()  # the mark ends with the attempt it was for
    job = await store.get_job(claimed.id)
    assert job is not None and job.status == JobStatus.CANCELLED
    assert one_job.ran == []


async def test_a_cancel_asked_before_a_retry_stops_the_retry_at_once(one_job: OneJob) -> None:
    store = one_job.store
    first = await store.claim_next(1.0)
    assert first is not None
    # Asked through the store, as another node would, while the first attempt runs; that
    # attempt then ends in a retry without seeing it (its node stopped, say).
    await store.request_cancel(first.id, 2.0)
    await store.retry_later(first.id, 0.0, "interrupted", fence=first.fence)
    second = await store.claim_next(3.0)
    assert second is not None and second.id == first.id and second.cancel_requested
    await one_job.runner._run(second)
    job = await store.get_job(first.id)
    assert job is not None and job.status == JobStatus.CANCELLED
    assert one_job.ran == []


async def test_a_cancel_mark_for_a_job_that_ended_elsewhere_is_dropped(one_job: OneJob) -> None:
    store, runner = one_job.store, one_job.runner
    claimed = await store.claim_next(1.0)
    assert claimed is not None
    await runner.cancel(claimed.id)  # claimed here, no handle: marked for its attempt
    assert runner._early_cancels == {claimed.id}
    await runner._cancel_requested()
    assert runner._early_cancels == {claimed.id}  # still running here: the mark stays
    # The attempt never comes (its lease was lost) and the job ends without this node.
    await store.finish(claimed.id, JobStatus.FAILED, 2.0, error="taken over")
    await runner._cancel_requested()
    assert runner._early_cancels == set()


@pytest.mark.pulumi
async def test_a_cancel_while_the_worker_starts_keeps_the_operation_from_starting(
    pulumi_env: PulumiEnvironment, data_dir: Path
) -> None:
    ops = PulumiOperations(pulumi_env, warm_workers=0)  # a cold start: a second or two
    await ops.start()
    target = StackTarget("inc-early", "rtearly", SLOW)
    up = asyncio.create_task(ops.up(target))
    try:
        for _ in range(1000):  # no timer: the cancel must come while the worker is being acquired
            if ops.is_locked(target):
                break
            await asyncio.sleep(0)
        assert ops.is_locked(target), "the operation never took its stack"
        assert await ops.cancel(target)  # taken, though no worker runs the operation yet
        with pytest.raises(OperationCancelled, match="before it started"):
            await up
        state = data_dir / "pulumi-state" / ".pulumi" / "stacks" / "rtearly"
        assert not state.exists() or list(state.iterdir()) == []  # nothing was created
        # The worker it would have used serves the next operation.
        listing = await ops.list_stacks("rtearly", SLOW)
        assert listing == []
    finally:
        up.cancel()  # stops it, should it have gone ahead
        await asyncio.gather(up, return_exceptions=True)
        await ops.close()


@pytest.mark.pulumi
async def test_the_deadline_stops_a_running_operation_cleanly(
    make_client: MakeClient, data_dir: Path, logs: LogCapture
) -> None:
    @playbook(project="rtdeadline", program=SLOW)
    @on("incident.triggered", "incident.acknowledged")
    async def slow(ctx: Context) -> None:
        """A minute-long up on trigger, an instant one on acknowledge."""
        sleep = "60" if ctx.event.type == "incident.triggered" else "0"
        await ctx.stack.set_config({"sleep_seconds": sleep})
        await ctx.stack.up()

    client = await make_client([slow], job_timeout=10.0, job_max_attempts=1)
    await client.deliver(pd_event("incident.triggered", "QDEAD"), "dead-t")
    [job] = await client.wait_for_jobs(timeout=90)
    assert job.status == JobStatus.FAILED and "timeout" in (job.error or ""), job.error
    recorded = await client.daemon.store.get_job(job.id)
    assert recorded is not None
    # The config went with the up, in one request: done, then the up stopped at the deadline.
    assert [(s.step, s.outcome) for s in recorded.steps] == [
        ("set_config", "succeeded"),
        ("up", "failed"),
    ]
    assert "timeout" in (recorded.steps[-1].error or "")
    assert logs.events("job.failed")[0]["error_kind"] == "timeout"
    locks = data_dir / "pulumi-state" / ".pulumi" / "locks"
    assert list(locks.rglob("*.json")) == []  # repaired
    await client.deliver(pd_event("incident.acknowledged", "QDEAD"), "dead-a")
    jobs = await client.wait_for_jobs(timeout=90)
    assert jobs[-1].status == JobStatus.SUCCEEDED, jobs[-1].error


def test_a_secret_too_short_to_mask_is_refused_by_name() -> None:
    assert SECRET_MIN_LENGTH >= Redactor.MIN_LENGTH
    with pytest.raises(ValueError, match="'api_key'") as refused:
        check_config({"region": "eu", "api_key": Secret(SHORT)})
    assert SHORT not in str(refused.value)
    with pytest.raises(ValueError, match="'empty'"):
        check_config({"empty": Secret("")})
    check_config({"api_key": Secret("x" * SECRET_MIN_LENGTH), "short": "plain"})  # accepted


async def test_a_job_setting_a_short_secret_fails_with_a_clear_error(
    make_client: MakeClient, logs: LogCapture
) -> None:
    @on("incident.triggered")
    async def configure(ctx: Context) -> None:
        """Sets a secret far too short to be masked."""
        await ctx.stack.set_config({"region": "eu", "api_key": Secret(SHORT)})

    client = await make_client([configure])
    await client.deliver(pd_event("incident.triggered", "QSHORT"), "short-t")
    [job] = await client.wait_for_jobs(timeout=30)
    assert job.status == JobStatus.FAILED and job.steps == ()
    assert "'api_key'" in (job.error or "") and "too short" in (job.error or ""), job.error
    assert SHORT not in (job.error or "") and SHORT not in logs.text
