"""No process of a stack operation outlives it: after a normal run, a timeout, a cancel, the daemon's
death, and crash recovery, no worker, `pulumi` CLI or provider plugin of it is left.

The provider used here (tests/programs/stubborn.py) ignores SIGTERM and runs in a process group of its
own, as Pulumi starts plugins: only a SIGKILL found by more than the worker's process group ends it.
"""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responder.stacks import (
    Call,
    OperationCancelled,
    OperationTimeout,
    PulumiEnvironment,
    PulumiOperations,
    StackOperations,
    StackTarget,
)
from tests.helpers import CASE_VARIABLE, REPO, LogCapture, marked_processes, until

pytestmark = pytest.mark.pulumi

KILL_GRACE = 3.0
STUBBORN = "tests.programs.stubborn:pulumi_program"


def case_processes(case: str) -> dict[int, str]:
    """pid → command line of each live process started for this test: all inherit its marker."""
    return {pid: " ".join(args) for pid, args in marked_processes(CASE_VARIABLE, case).items()}


def kinds(processes: dict[int, str]) -> set[str]:
    """Which of worker, CLI and dynamic provider are among the processes."""
    named = {
        "worker": "responder.stacks.worker",
        "pulumi": "/pulumi ",
        "pulumi.dynamic": "-m responder.stacks.dynamic_provider",
    }
    return {kind for kind, part in named.items() for cmd in processes.values() if part in cmd}


@pytest.fixture
async def ops(
    case: str, pulumi_env: PulumiEnvironment, logs: LogCapture
) -> AsyncIterator[StackOperations]:
    # No warm spare: after an operation, no process of this test should be alive at all.
    ops = PulumiOperations(
        pulumi_env, timeout=180, kill_grace=KILL_GRACE, redactor=logs.redactor, warm_workers=0
    )
    await ops.start()
    yield ops
    await ops.close()


async def stubborn_stack(ops: StackOperations, name: str, started: Path) -> StackTarget:
    target = StackTarget(name, "stubborn", STUBBORN)
    await ops.set_config(target, {"started_file": str(started), "sleep_seconds": "120"})
    return target


async def wait_stubborn(started: Path, case: str) -> None:
    """Until the provider is creating the resource (ignoring SIGTERM) under worker and CLI."""
    await until(started.exists, "the stubborn provider started creating", 90, 0.1)
    assert kinds(case_processes(case)) == {"worker", "pulumi", "pulumi.dynamic"}


def lock_files(env: PulumiEnvironment) -> list[Path]:
    return list((env.data_dir / "pulumi-state" / ".pulumi" / "locks").rglob("*.json"))


async def test_normal_operations_leave_no_process(
    ops: StackOperations, case: str, tmp_path: Path
) -> None:
    target = StackTarget("inc-normal", "stubborn", STUBBORN)
    await ops.set_config(target, {"started_file": str(tmp_path / "started"), "sleep_seconds": "0"})
    await ops.up(target)
    assert case_processes(case) == {}
    await ops.destroy(target, remove=True)
    assert case_processes(case) == {}


async def test_timeout_ends_every_process(
    ops: StackOperations, case: str, pulumi_env: PulumiEnvironment, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    target = await stubborn_stack(ops, "inc-timeout", started)
    up = asyncio.create_task(ops.up(target, call=Call(timeout=20)))
    await wait_stubborn(started, case)
    with pytest.raises(OperationTimeout):
        await up
    assert case_processes(case) == {}
    assert lock_files(pulumi_env) == []  # repaired once nothing was left to hold the lock


async def test_cancel_escalates_and_ends_every_process(
    ops: StackOperations, case: str, pulumi_env: PulumiEnvironment, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    target = await stubborn_stack(ops, "inc-cancel", started)
    up = asyncio.create_task(ops.up(target))
    await wait_stubborn(started, case)
    cancelled_at = asyncio.get_running_loop().time()
    assert await ops.cancel(target)
    assert not await ops.cancel(target)  # one SIGTERM only: a second would make the CLI abandon it
    # The provider ignores SIGTERM, so the CLI's graceful cancel cannot finish: only the SIGKILL
    # after the grace ends the operation (the provider would sleep for 120 s).
    with pytest.raises(OperationCancelled):
        await asyncio.wait_for(up, KILL_GRACE + 40)
    assert asyncio.get_running_loop().time() - cancelled_at < KILL_GRACE + 40
    assert case_processes(case) == {}
    assert lock_files(pulumi_env) == []


def start_daemon(data_dir: Path, started: Path) -> "subprocess.Popen[bytes]":
    """A stand-in daemon (tests/programs/run_up.py) running `up` of the stubborn stack."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.programs.run_up",
            *(str(data_dir), "stubborn", "inc-crash", STUBBORN),
            *(f"started_file={started}", "sleep_seconds=120"),
        ],
        cwd=REPO,
    )


async def test_daemon_death_ends_every_process(
    case: str, pulumi_env: PulumiEnvironment, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    daemon = start_daemon(pulumi_env.data_dir, started)
    try:
        await wait_stubborn(started, case)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        # The worker learns of it (PR_SET_PDEATHSIG), cancels, and kills what is left after the grace.
        await until(
            lambda: case_processes(case) == {},
            "the operation's processes ended",
            KILL_GRACE + 20,
            0.1,
        )
    finally:
        daemon.kill()
        daemon.wait()


async def test_recover_ends_a_dead_operations_processes(
    case: str, pulumi_env: PulumiEnvironment, logs: LogCapture, tmp_path: Path
) -> None:
    """Daemon and worker killed together: the provider is an orphan only recovery ends."""
    started = tmp_path / "started"
    daemon = start_daemon(pulumi_env.data_dir, started)
    try:
        await wait_stubborn(started, case)
        (worker,) = [p for p, cmd in case_processes(case).items() if "stacks.worker" in cmd]
        os.kill(worker, signal.SIGSTOP)  # so it cannot react to the daemon's death
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        os.kill(worker, signal.SIGKILL)
        await until(lambda: worker not in case_processes(case), "the worker died", 10, 0.1)
    finally:
        daemon.kill()
        daemon.wait()
    # The CLI may exit by itself, losing the program's server in the worker; the provider does not.
    orphans = {
        pid
        for pid, cmd in case_processes(case).items()
        if "-m responder.stacks.dynamic_provider" in cmd
    }
    assert orphans

    ops = PulumiOperations(
        pulumi_env, kill_grace=KILL_GRACE, redactor=logs.redactor, warm_workers=0
    )
    await ops.start()
    try:
        await ops.recover(StackTarget("inc-crash", "stubborn", STUBBORN))
    finally:
        await ops.close()
    assert case_processes(case) == {}
    reported = {line["pid"] for line in logs.events("stack.leftover_process")}
    assert orphans <= reported
    assert lock_files(pulumi_env) == []
