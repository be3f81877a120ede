"""Kept workers: a worker whose request ended cleanly runs the next request (each job's operation
starts in a warm process), with nothing of the earlier request left alive; one that failed, ran a
project folder's program, died while idle or served its share of requests is not reused."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from responder.stacks import (
    Call,
    PulumiEnvironment,
    PulumiOperations,
    Secret,
    StackError,
    StackTarget,
    processes,
)
from responder.stacks.pool import Worker, WorkerPool
from responder.stacks.protocol import GRACE_VARIABLE
from responder.store import JobStatus
from tests.helpers import Client, LogCapture, ProbeTarget, pd_event, until
from tests.test_processes_trees import STUBBORN, case_processes, kinds

pytestmark = pytest.mark.pulumi

NESTED = "tests.programs.nested_secret:pulumi_program"
LEAKY = "tests.programs.leaky_failure:pulumi_program"
STATE = "tests.programs.process_state"
# Declared stateless here, as a daemon's RESPONDER_STATELESS_PROGRAMS would (not `remembers`).
STATELESS = (
    STUBBORN,
    NESTED,
    LEAKY,
    *(f"{STATE}:{p}" for p in ("sets_env", "sets_umask", "leaves_thread", "reads_stdin")),
)

MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def ops(
    pulumi_env: PulumiEnvironment, logs: LogCapture, case: str
) -> AsyncIterator[PulumiOperations]:
    # No warm spare, one kept worker: every worker process alive between operations is a kept one.
    ops = PulumiOperations(
        pulumi_env,
        timeout=180,
        kill_grace=3,
        redactor=logs.redactor,
        warm_workers=0,
        kept_workers=1,
        stateless_programs=STATELESS,
    )
    await ops.start()
    yield ops
    await ops.close()


def workers(case: str) -> list[int]:
    return sorted(pid for pid, cmd in case_processes(case).items() if "stacks.worker" in cmd)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def the_kept_worker(case: str) -> int:
    """The one process left of the operations so far: an idle worker, with nothing below it."""
    assert kinds(case_processes(case)) == {"worker"}, case_processes(case)
    (pid,) = workers(case)
    assert children(pid) == []
    return pid


async def test_a_worker_whose_request_succeeded_runs_the_next_until_its_share_is_served(
    pulumi_env: PulumiEnvironment, logs: LogCapture, case: str
) -> None:
    ops = PulumiOperations(
        pulumi_env,
        redactor=logs.redactor,
        warm_workers=0,
        kept_workers=1,
        operations_per_worker=3,
        stateless_programs=STATELESS,
    )
    await ops.start()
    try:
        pids = []
        for i in range(4):
            target = StackTarget(f"inc-kept-{i}", "nested", NESTED)
            up = await ops.up(target, config={"x": f"value-{i}"})
            # This request's stack and config, not those the process ran with before.
            assert up.outputs["x"].value == f"value-{i}"
            assert up.outputs["plain"].value == "visible"
            if i == 2:  # its third request: retired
                assert case_processes(case) == {}
            else:
                pids.append(the_kept_worker(case))
        assert pids[0] == pids[1] != pids[2]
        refreshed = await ops.refresh(StackTarget("inc-kept-0", "nested", NESTED))
        assert refreshed.outputs["x"].value == "value-0"
        assert the_kept_worker(case) == pids[2]
    finally:
        await ops.close()
    assert case_processes(case) == {}


async def test_a_failed_request_ends_its_worker(ops: PulumiOperations, case: str) -> None:
    target = StackTarget("inc-fails", "leaky", LEAKY)
    await ops.set_config(target, {"token": Secret("t0ken-value"), "fail": "true"})
    kept = the_kept_worker(case)
    with pytest.raises(StackError):
        await ops.up(target)
    assert case_processes(case) == {}
    await ops.up(StackTarget("inc-next", "nested", NESTED))
    assert the_kept_worker(case) != kept


async def test_a_project_folders_program_ends_its_worker(
    ops: PulumiOperations, case: str, tmp_path: Path
) -> None:
    """It changes the process (working directory, import path): the next program must not see it."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "Pulumi.yaml").write_text("name: folder\nruntime: python\n")
    (folder / "__main__.py").write_text("import pulumi\n\npulumi.export('where', 'folder')\n")
    up = await ops.up(StackTarget("inc-folder", "folder", str(folder)))
    assert up.outputs["where"].value == "folder"
    assert case_processes(case) == {}


async def test_a_kept_worker_killed_while_idle_is_replaced(
    ops: PulumiOperations, case: str
) -> None:
    await ops.up(StackTarget("inc-before-kill", "nested", NESTED))
    kept = the_kept_worker(case)
    os.kill(kept, signal.SIGKILL)
    await until(
        lambda: not processes.running(kept), "the worker died"
    )  # a zombie: asyncio may not know yet
    up = await ops.up(StackTarget("inc-after-kill", "nested", NESTED), config={"x": "after"})
    assert up.outputs["x"].value == "after"
    assert the_kept_worker(case) != kept


async def test_a_cancelled_operation_ends_its_kept_worker(
    ops: PulumiOperations, case: str, tmp_path: Path
) -> None:
    from tests.test_processes_trees import wait_stubborn

    started = tmp_path / "started"
    target = StackTarget("inc-kept-cancel", "stubborn", STUBBORN)
    await ops.set_config(target, {"started_file": str(started), "sleep_seconds": "120"})
    kept = the_kept_worker(case)
    up = asyncio.create_task(ops.up(target))
    await wait_stubborn(started, case)
    assert workers(case) == [kept]  # the `up` runs in the worker the config step left
    assert await ops.cancel(target)
    with pytest.raises(StackError):
        await up
    # Ended with all it started; what is left is the worker of the repair that followed, idle.
    assert kept not in case_processes(case)
    assert the_kept_worker(case) != kept


@pytest.mark.parametrize(("operations_per_worker", "idle_workers"), [(50, 2), (1, 1)])
async def test_the_daemon_keeps_the_worker_of_a_job_unless_each_operation_gets_its_own(
    make_client: MakeClient,
    probe_target: ProbeTarget,
    case: str,
    operations_per_worker: int,
    idle_workers: int,
) -> None:
    client = await make_client(
        probe_url=probe_target.url, workers=1, operations_per_worker=operations_per_worker
    )
    await client.deliver(pd_event("incident.triggered", "QKEEP"), "keep-trigger")
    [job] = await client.wait_for_jobs()
    assert job.status == JobStatus.SUCCEEDED, job.error
    # The warm spare, and the worker that ran the job's operations if it is kept.
    await until(lambda: len(workers(case)) == idle_workers, f"{idle_workers} idle workers")
    await asyncio.sleep(0.5)
    assert len(workers(case)) == idle_workers


@pytest.mark.parametrize("program", ["sets_env", "sets_umask", "leaves_thread"])
async def test_a_worker_whose_program_changed_the_process_is_not_kept(
    ops: PulumiOperations, case: str, program: str
) -> None:
    """What the next program, and the processes it starts, would inherit: the environment; a thread
    that would write on into the next request's output."""
    up = await ops.up(StackTarget(f"inc-{program}", "state", f"{STATE}:{program}"))
    assert up.outputs["ok"].value is True
    assert case_processes(case) == {}


async def test_a_kept_worker_runs_only_the_program_it_ran(ops: PulumiOperations, case: str) -> None:
    """Its modules stay loaded: another program's module of the same name must not stand in."""
    await ops.up(StackTarget("inc-first-program", "nested", NESTED))
    first = the_kept_worker(case)
    up = await ops.up(StackTarget("inc-other-program", "state", f"{STATE}:reads_stdin"))
    assert up.outputs["stdin_bytes"].value == 0
    assert the_kept_worker(case) != first  # the oldest gave way: one is kept here


@pytest.mark.parametrize("kept_workers", [0, 1])
async def test_a_program_reading_its_input_reads_the_end_at_once(
    pulumi_env: PulumiEnvironment, logs: LogCapture, case: str, kept_workers: int
) -> None:
    ops = PulumiOperations(
        pulumi_env,
        timeout=60,
        redactor=logs.redactor,
        warm_workers=0,
        kept_workers=kept_workers,
        stateless_programs=STATELESS,
    )
    await ops.start()
    try:
        for i in range(2):
            target = StackTarget(f"inc-stdin-{i}", "state", f"{STATE}:reads_stdin")
            up = await ops.up(target, call=Call(timeout=30))
            assert up.outputs["stdin_bytes"].value == 0
    finally:
        await ops.close()
    assert case_processes(case) == {}


async def test_a_program_not_declared_stateless_runs_in_a_fresh_worker_each_time(
    ops: PulumiOperations, case: str
) -> None:
    """What it keeps in its module (here, the stacks it ran for) stays with its one run."""
    for stack in ("inc-remembers-a", "inc-remembers-b"):
        up = await ops.up(StackTarget(stack, "state", f"{STATE}:remembers"))
        assert up.outputs["stacks_seen"].value == [stack]
        assert case_processes(case) == {}


async def test_a_worker_given_back_after_close_is_ended(
    pulumi_env: PulumiEnvironment, logs: LogCapture, case: str
) -> None:
    """An operation cancelled while its worker starts, and the operations closed meanwhile (the
    daemon's shutdown): the worker it was given is not left behind."""
    ops = PulumiOperations(
        pulumi_env, timeout=60, kill_grace=3, redactor=logs.redactor, warm_workers=0
    )
    await ops.start()
    target = StackTarget("inc-given-back", "nested", NESTED)
    up = asyncio.create_task(ops.up(target))
    # Its cancel is registered just before its worker is taken (and started: no spare): cancel then.
    while target.key not in ops._cancels:
        await asyncio.sleep(0)
    assert await ops.cancel(target)
    await ops.close()
    with pytest.raises(StackError):
        await up
    await until(lambda: case_processes(case) == {}, "no process left", 10)


async def test_a_caller_cancelled_as_its_spare_arrives_leaves_the_spare_in_the_pool(
    case: str,
) -> None:
    pool = WorkerPool({**os.environ, GRACE_VARIABLE: "3"}, spares=1, kept=1)
    pool.fill()
    caller: list[asyncio.Task[Worker]] = []
    pool._spares[0].add_done_callback(lambda _: caller[0].cancel())  # in the same loop turn
    caller.append(asyncio.create_task(pool.acquire(NESTED)))
    with pytest.raises(asyncio.CancelledError):
        await caller[0]
    (spare,) = workers(case)
    taken = await pool.acquire(NESTED)
    assert taken.proc.pid == spare  # the next caller's
    await taken.retire(3)
    await pool.close(3)
    await until(lambda: case_processes(case) == {}, "no process left", 10)


class FirstStartFails(WorkerPool):
    """A pool whose first worker cannot be started (as with too many open files)."""

    started = 0

    async def _spawn(self) -> Worker:
        self.started += 1
        if self.started == 1:
            await asyncio.sleep(0.1)
            raise OSError(24, "Too many open files")
        return await super()._spawn()


def pool_env() -> dict[str, str]:
    return {**os.environ, GRACE_VARIABLE: "3"}


async def test_a_spare_put_back_after_close_is_ended(case: str) -> None:
    """close() while a caller waits for its spare to start, the caller cancelled afterwards."""
    pool = WorkerPool(pool_env(), spares=1, kept=1)
    pool.fill()
    caller = asyncio.create_task(pool.acquire(NESTED))
    await asyncio.sleep(0)  # the caller took the spare and waits for it to start
    assert not pool._spares
    await pool.close(3)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await until(lambda: case_processes(case) == {}, "the spare ended", 20)


async def test_a_spare_that_failed_to_start_neither_stops_close_nor_the_next_spare(
    case: str,
) -> None:
    pool = FirstStartFails(pool_env(), spares=2, kept=1)
    pool.fill()
    await pool.close(3)  # the failed one logged, the other one ended
    assert case_processes(case) == {}

    pool = FirstStartFails(pool_env(), spares=1, kept=1)
    pool.fill()
    with pytest.raises(OSError):
        await pool.acquire(NESTED)
    taken = await pool.acquire(NESTED)
    await until(lambda: len(workers(case)) == 2, "a new spare beside the worker taken")
    await taken.retire(3)
    await pool.close(3)
    assert case_processes(case) == {}


async def test_a_kept_worker_given_back_still_runs_only_its_program(case: str) -> None:
    pool = WorkerPool(pool_env(), spares=0, kept=1, stateless=[NESTED, LEAKY])
    worker = await pool.acquire(NESTED)
    worker.requests = 1  # as if it had run a request of NESTED
    await pool.release(worker, NESTED, 3)
    assert await pool.acquire(NESTED) is worker
    await pool.give_back(worker, 3)  # its operation was cancelled before it was sent
    other = await pool.acquire(LEAKY)
    assert other is not worker
    await other.retire(3)
    assert await pool.acquire(NESTED) is worker
    await worker.retire(3)
    await pool.close(3)
    await until(lambda: case_processes(case) == {}, "no process left", 10)
