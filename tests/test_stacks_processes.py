"""What provisioning a new stack costs in `pulumi` processes: the CLI calls on its critical path
(plaintext config written to the settings file, outputs taken from the program's own run), the
ownership tags written to the file backend without a process (the CLI path for other backends is
in test_multinode and test_stacks_tagging), and outputs whose secrets (nested ones included) are
told apart."""

import uuid

import pytest

from responder.stacks import NodeFault, PulumiEnvironment, PulumiOperations, StackTarget
from tests.helpers import CASE_VARIABLE, LogCapture
from tests.test_processes_secrets import Watcher
from tests.test_stacks import stack_tags

pytestmark = pytest.mark.pulumi

NESTED = "tests.programs.nested_secret:pulumi_program"
TAGS = {
    "responder:incident": "QPROC",
    "responder:playbook": "p",
    "responder:delivery": "d",
    "responder:created_at": "1",
}


def cli_calls(watcher: Watcher) -> list[tuple[int, tuple[str, ...]]]:
    """(pid, the pulumi subcommand words) of each `pulumi` CLI process seen, by pid."""
    found = {}
    for pid, args in watcher.seen:
        if args and (args[0].endswith("/pulumi") or args[0] == "pulumi"):
            words = tuple(a for a in args[1:] if not a.startswith("-"))[:3]
            found[pid] = words
    return sorted(found.items())


async def test_a_new_stack_costs_two_cli_processes(
    pulumi_env: PulumiEnvironment, logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = uuid.uuid4().hex
    monkeypatch.setenv(CASE_VARIABLE, case)
    ops = PulumiOperations(pulumi_env, redactor=logs.redactor, warm_workers=0)
    await ops.start()
    watcher = Watcher(case)
    watcher.start()
    try:
        up = await ops.up(StackTarget("inc-proc", "nested", NESTED), config={"x": "1"}, tags=TAGS)
    finally:
        watcher.stop()
        await ops.close()
    calls = cli_calls(watcher)
    kinds = sorted(_kind(words) for _, words in calls)
    # As a set: a plugin the `up` starts shows the `up`'s command line between its fork and exec.
    assert sorted(set(kinds)) == [("stack", "init"), ("up",)], calls
    assert kinds.count(("stack", "init")) == 1, calls
    assert (
        stack_tags(pulumi_env, StackTarget("inc-proc", "nested")) == TAGS
    )  # as the CLI reads them
    assert up.outputs["plain"].value == "visible"
    assert up.outputs["x"].value == "1"  # the config the program read from the file written


def _kind(words: tuple[str, ...]) -> tuple[str, ...]:
    return words[:1] if words[:1] == ("up",) else words[:2]


async def test_a_secret_nested_in_an_output_is_masked(
    pulumi_env: PulumiEnvironment, logs: LogCapture
) -> None:
    ops = PulumiOperations(pulumi_env, redactor=logs.redactor, warm_workers=0)
    await ops.start()
    try:
        up = await ops.up(StackTarget("inc-nested", "nested", NESTED))
        refreshed = await ops.refresh(StackTarget("inc-nested", "nested", NESTED))
        read = await ops.outputs(StackTarget("inc-nested", "nested", NESTED))
    finally:
        await ops.close()
    # Registered for masking by itself, not only as part of the map's printed form.
    assert logs.redactor.redact("it was nested-secret-value") == "it was [secret]"
    for result in (up, refreshed, read):
        nested = result.outputs["nested"]
        assert nested.secret and nested.value == {"password": "nested-secret-value", "port": 5432}
        assert result.masked_outputs() == {"nested": "[secret]", "plain": "visible"}
    assert "nested-secret-value" not in logs.text


async def test_a_fault_of_the_node_s_own_files_is_a_retryable_node_fault(
    pulumi_env: PulumiEnvironment,
) -> None:
    """A full disk or a file in the way of the workspace: before, a raw OSError, which the runner
    took for the playbook's error and failed the job with for good."""
    in_the_way = pulumi_env.workspace_dir(f"nodefault{uuid.uuid4().hex[:8]}")
    in_the_way.parent.mkdir(parents=True, exist_ok=True)
    in_the_way.write_text("not a directory")
    ops = PulumiOperations(pulumi_env, warm_workers=0)
    await ops.start()
    try:
        with pytest.raises(NodeFault, match="cannot prepare the project's workspace") as raised:
            await ops.up(StackTarget("inc-fault", in_the_way.name, NESTED))
    finally:
        await ops.close()
        in_the_way.unlink()
    assert raised.value.retryable and raised.value.kind == "node_fault"
