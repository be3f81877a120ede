"""A store that fails for a while: the runner and reaper wait it out, /readyz says why meanwhile, and
no job's result is lost. The acceptance case locks the real SQLite file from another process."""

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from responder.outcome import AwaitingApproval
from responder.playbook import Context, Playbook, on, playbook
from responder.runner import Runner
from responder.stacks import StackLockedError
from responder.store import Job, JobStatus, StoreUnavailable
from tests.helpers import Client, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
SLOW = "tests.programs.slow:pulumi_program"

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


async def readiness(
    client: Client, status: int, runner: str = "", timeout: float = 60.0
) -> dict[str, Any]:
    """Poll /readyz until it answers `status` (with `runner` in its runner check); return its body."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await client.http.get("/readyz")
        body: dict[str, Any] = await answer.json()
        if answer.status == status and runner in body["checks"]["runner"]:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/readyz never answered {status}: {body}")
        await asyncio.sleep(0.1)


async def test_a_store_locked_by_another_process_for_10s(
    make_client: MakeClient, logs: LogCapture
) -> None:
    release = asyncio.Event()
    started: list[int | None] = []

    @on("incident.triggered")
    async def gated(ctx: Context) -> None:
        """Holds its job until the test releases it."""
        started.append(ctx.job_id)
        await release.wait()

    client = await make_client([gated], workers=2)
    for i in range(4):
        answer = await client.deliver(pd_event("incident.triggered", f"QLOCK{i}"), f"lock-{i}")
        assert answer.status == 202
    deadline = asyncio.get_running_loop().time() + 30
    while len(started) < 2:  # two jobs running, two queued
        assert asyncio.get_running_loop().time() < deadline, started
        await asyncio.sleep(0.05)
    await readiness(client, 200)

    db = client.daemon.settings.data_dir / "responder.db"
    locker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOCKER,
        str(db),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert locker.stdin is not None and locker.stdout is not None
    try:
        assert await asyncio.wait_for(locker.stdout.readline(), 30) == b"locked\n"
        locked_at = asyncio.get_running_loop().time()
        release.set()  # the running jobs end now, while the store cannot record it
        # The runner's writes fail once sqlite's busy timeout (5 s) expires: it says so.
        body = await readiness(client, 503, runner="database is locked", timeout=30)
        assert body["status"] == "not ready"
        while asyncio.get_running_loop().time() < locked_at + 10:
            answer = await client.http.get("/readyz")
            assert answer.status == 503, await answer.text()  # for as long as the outage lasts
            await asyncio.sleep(0.5)
    finally:
        locker.stdin.write(b"\n")
        await locker.stdin.drain()
        await locker.wait()

    jobs = await client.wait_for_jobs(timeout=60)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 4
    assert await readiness(client, 200)
    assert logs.events("store.unavailable") and logs.events("store.recovered")


async def first_attempt_recorded(client: Client) -> Job:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        [job] = await client.daemon.store.list_jobs()
        if job.status == JobStatus.QUEUED and job.attempts == 1:
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.1)


class Outage:
    """One store method raises StoreUnavailable until `end()`."""

    def __init__(self, store: object, method: str) -> None:
        self.method = method
        self.real = getattr(store, method)
        self.active = True
        setattr(store, method, self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.active:
            raise StoreUnavailable(f"injected outage of {self.method}")
        return await self.real(*args, **kwargs)

    def end(self) -> None:
        self.active = False


def playbook_for(method: str) -> tuple[Playbook, JobStatus]:
    """A playbook whose run needs `method`, and the status its job ends in."""
    if method == "retry_later":

        @on("incident.triggered")
        async def locked(ctx: Context) -> None:
            """Fails on the stack lock."""
            raise StackLockedError("locked", stack=ctx.stack.name)

        return locked, JobStatus.QUEUED  # queued again for its retry
    if method == "await_approval":

        @on("incident.triggered")
        async def gated(_ctx: Context) -> None:
            """Asks for approval."""
            raise AwaitingApproval({"operation": "up", "steps": []})

        return gated, JobStatus.AWAITING_APPROVAL
    if method in ("add_step", "touch_stack", "reserve_stack", "get_stack", "operations_since"):

        @playbook(project="rtoutage", program=SLOW)
        @on("incident.triggered")
        async def up(ctx: Context) -> None:
            """Ups a one-resource stack."""
            await ctx.stack.set_config({"sleep_seconds": "0"})
            await ctx.stack.up()

        return up, JobStatus.SUCCEEDED

    @on("incident.triggered")
    async def nothing(_ctx: Context) -> None:
        """Touches no stack."""

    return nothing, JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    "method",
    [
        "claim_next",
        "next_due",
        "finish",
        "retry_later",
        "await_approval",
        "add_step",
        "touch_stack",
        "reserve_stack",
        "get_stack",
        "operations_since",
    ],
)
async def test_any_store_call_of_the_runner_is_waited_out(
    make_client: MakeClient, method: str
) -> None:
    playbook, expected = playbook_for(method)
    client = await make_client([playbook], workers=2, retry_backoff=3600.0)
    outage = Outage(client.daemon.store, method)
    answer = await client.deliver(pd_event("incident.triggered", "QOUT"), "out-1")
    assert answer.status == 202
    await readiness(client, 503, runner=f"injected outage of {method}")
    outage.end()
    if expected == JobStatus.QUEUED:  # its first attempt recorded, its retry an hour away
        job = await first_attempt_recorded(client)
        assert "locked" in (job.error or "")
    else:
        [job] = await client.wait_for_jobs(timeout=60, settled=(JobStatus.AWAITING_APPROVAL,))
        assert job.status == expected, job.error
    await readiness(client, 200)
    client.daemon.runner.notify()
    assert isinstance(client.daemon.runner, Runner)
    assert not client.daemon.runner._loops[0].done()  # the workers still run


async def test_an_unexpected_error_is_logged_and_the_workers_go_on(
    make_client: MakeClient, logs: LogCapture
) -> None:
    @on("incident.triggered")
    async def nothing(_ctx: Context) -> None:
        """Touches no stack."""

    client = await make_client([nothing], workers=1)
    store = client.daemon.store
    real_claim, real_finish = store.claim_next, store.finish
    faults = {"claim_next": 1, "finish": 1}

    async def claim_next(now: float, token: str | None = None) -> Any:
        if faults["claim_next"]:
            faults["claim_next"] -= 1
            raise RuntimeError("a bug in claim")
        return await real_claim(now, token)

    async def finish(*args: Any, **kwargs: Any) -> Any:
        if faults["finish"]:
            faults["finish"] -= 1
            raise RuntimeError("a bug in finish")
        return await real_finish(*args, **kwargs)

    store.claim_next = claim_next  # type: ignore[method-assign]
    store.finish = finish  # type: ignore[method-assign]
    client.daemon.runner.notify()
    await client.deliver(pd_event("incident.triggered", "QBUG1"), "bug-1")
    await client.deliver(pd_event("incident.triggered", "QBUG2"), "bug-2")
    jobs = await client.wait_for_jobs(timeout=60)
    # The first job's result could not be recorded: it fails with the error, the second runs.
    assert [j.status for j in jobs] == [JobStatus.FAILED, JobStatus.SUCCEEDED]
    assert "a bug in finish" in (jobs[0].error or "")
    assert logs.events("runner.loop_error") and logs.events("job.crashed")


async def test_the_reapers_store_failures_show_in_readiness(make_client: MakeClient) -> None:
    client = await make_client(reaper_interval=0.1)
    outage = Outage(client.daemon.store, "expired_approvals")  # only the reaper calls it
    await readiness(client, 503, runner="reaper: injected outage of expired_approvals")
    outage.end()
    await readiness(client, 200)
