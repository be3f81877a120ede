"""The in-memory stack operations keep the real ones' contract (the same assertions run against both,
the real ones only in tests marked `pulumi`), and a daemon gets the real CLI only in such tests."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from responder.stacks import (
    Call,
    OperationCancelled,
    PulumiEnvironment,
    PulumiOperations,
    StackNotFoundError,
    StackOperations,
    StackTarget,
    StepResult,
)
from tests.fakes import FakeOperations
from tests.helpers import Client

SLOW = "tests.programs.slow:pulumi_program"
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture(params=["fake", pytest.param("pulumi", marks=pytest.mark.pulumi)])
async def ops(
    request: pytest.FixtureRequest, pulumi_env: PulumiEnvironment
) -> AsyncIterator[StackOperations]:
    used: StackOperations = FakeOperations()
    if request.param == "pulumi":
        used = PulumiOperations(pulumi_env, timeout=180, kill_grace=10)
    await used.start()
    yield used
    await used.close()


def recording() -> tuple[list[str], Call]:
    steps: list[str] = []

    def seen(result: StepResult) -> None:
        steps.append(result.step)

    return steps, Call(on_step=seen)


async def test_config_goes_first_and_each_step_is_told(ops: StackOperations) -> None:
    target = StackTarget("double-up", "double", SLOW)
    steps, call = recording()
    result = await ops.up(target, config={"sleep_seconds": "0"}, call=call)
    assert steps == ["set_config", "up"] and result.step == "up"
    assert result.changes.get("create", 0) >= 1
    assert "double-up" in await ops.list_stacks("double", SLOW)

    steps, call = recording()
    result = await ops.preview(target, config={"sleep_seconds": "1"}, call=call)
    assert steps == ["set_config", "preview"]
    assert "update" in {s["op"] for s in result.details["plan"]}
    assert (await ops.outputs(target)).step == "outputs"
    result = await ops.preview_destroy(target)
    assert "delete" in {s["op"] for s in result.details["plan"]}


async def test_a_missing_stack_is_not_found_and_not_created(ops: StackOperations) -> None:
    target = StackTarget("double-missing", "double", SLOW)
    with pytest.raises(StackNotFoundError):
        await ops.refresh(target)
    with pytest.raises(StackNotFoundError):
        await ops.destroy(target, remove=True)
    assert "double-missing" not in await ops.list_stacks("double", SLOW)


async def test_destroy_exports_first_and_removes_the_stack(
    ops: StackOperations, tmp_path: Path
) -> None:
    target = StackTarget("double-gone", "double", SLOW)
    await ops.up(target, config={"sleep_seconds": "0"})
    steps, call = recording()
    export = tmp_path / "postmortem" / "gone.json"
    result = await ops.destroy(target, remove=True, export_to=export, call=call)
    assert steps == ["export", "destroy"] and result.step == "destroy"
    assert isinstance(json.loads(export.read_text()), dict)
    assert "double-gone" not in await ops.list_stacks("double", SLOW)
    with pytest.raises(StackNotFoundError):
        await ops.destroy(target, remove=True)


async def test_cancel_stops_the_running_operation(ops: StackOperations) -> None:
    target = StackTarget("double-cancel", "double", SLOW)
    if isinstance(ops, FakeOperations):
        ops.delay("up", 120)
    up = asyncio.create_task(ops.up(target, config={"sleep_seconds": "120"}))
    async with asyncio.timeout(60):
        while not await ops.cancel(target):  # until the operation is running
            await asyncio.sleep(0.05)
    with pytest.raises(OperationCancelled):
        await up


async def test_a_daemon_in_an_unmarked_test_gets_the_double(
    make_client: MakeClient, fake_ops: FakeOperations
) -> None:
    client = await make_client([])
    assert client.daemon.ops is fake_ops and fake_ops.started == 1


@pytest.mark.pulumi
async def test_a_daemon_in_a_pulumi_test_gets_the_real_cli(
    make_client: MakeClient, fake_ops: FakeOperations
) -> None:
    client = await make_client([])
    assert isinstance(client.daemon.ops, PulumiOperations)
    assert client.daemon.ops.pulumi_version.startswith("v3.") and fake_ops.started == 0
