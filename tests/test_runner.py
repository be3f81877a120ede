"""The runner's retry, failure and shutdown behaviour, with playbooks that touch no stack."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

from responder.playbook import Context, on
from responder.stacks import ProgramError, StackLockedError
from responder.store import JobStatus
from responder.store.sqlite import SQLiteStore
from tests.helpers import Client, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]


async def test_retryable_failure_is_retried_with_backoff(
    make_client: MakeClient, logs: LogCapture
) -> None:
    attempts: list[float] = []

    @on("incident.triggered")
    async def flaky(ctx: Context) -> None:
        """Fails on the stack lock twice, then succeeds."""
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise StackLockedError("the stack is locked by another update", stack=ctx.stack.name)

    client = await make_client([flaky], retry_backoff=0.3, job_max_attempts=3)
    await client.deliver(pd_event("incident.triggered", "QRETRY"), "retry-1")
    [job] = await client.wait_for_jobs()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 3
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # exponential backoff
    assert len(logs.events("job.retrying")) == 2


async def test_retries_are_bounded(make_client: MakeClient) -> None:
    @on("incident.triggered")
    async def always_locked(ctx: Context) -> None:
        """Always fails on the lock."""
        raise StackLockedError("locked", stack=ctx.stack.name)

    client = await make_client([always_locked], retry_backoff=0.1, job_max_attempts=2)
    await client.deliver(pd_event("incident.triggered", "QBOUND"), "bound-1")
    [job] = await client.wait_for_jobs()
    assert job.status == JobStatus.FAILED and job.attempts == 2 and "locked" in (job.error or "")


async def test_permanent_errors_fail_at_once(make_client: MakeClient) -> None:
    @on("incident.triggered")
    async def broken_program(ctx: Context) -> None:
        """A program error is not retried."""
        raise ProgramError("NameError: boom", stack=ctx.stack.name)

    @on("incident.triggered")
    async def buggy(ctx: Context) -> None:
        """A bug in the playbook itself."""
        raise KeyError("missing")

    client = await make_client([broken_program, buggy])
    await client.deliver(pd_event("incident.triggered", "QPERM"), "perm-1")
    jobs = await client.wait_for_jobs()
    assert [(j.playbook, j.status, j.attempts) for j in jobs] == [
        ("broken_program", JobStatus.FAILED, 1),
        ("buggy", JobStatus.FAILED, 1),
    ]
    assert "NameError: boom" in (jobs[0].error or "")
    assert jobs[1].error == "KeyError: 'missing'"


async def test_shutdown_leaves_work_for_the_next_start(
    make_client: MakeClient, data_dir: Path
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    @on("incident.triggered")
    async def slow(ctx: Context) -> None:
        """Blocks until released."""
        started.set()
        await release.wait()

    client = await make_client([slow], workers=1, shutdown_grace=0.5)
    await client.deliver(pd_event("incident.triggered", "QSHUT"), "shut-1")
    await client.deliver(pd_event("incident.triggered", "QSHUT2"), "shut-2")
    await asyncio.wait_for(started.wait(), 30)
    await client.http.close()  # graceful shutdown: grace runs out, the running job is interrupted

    store = SQLiteStore(data_dir / "responder.db")
    await store.open()
    statuses = [j.status for j in await store.list_jobs()]
    await store.close()
    assert statuses == [JobStatus.RUNNING, JobStatus.QUEUED]

    release.set()
    again = await make_client([slow], workers=1)
    jobs = await again.wait_for_jobs()
    assert [(j.status, j.attempts) for j in jobs] == [
        (JobStatus.SUCCEEDED, 2),
        (JobStatus.SUCCEEDED, 1),
    ]
