"""The stack-operations layer against the real pulumi CLI and a temporary file backend."""

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from responder.stacks import (
    Call,
    OperationTimeout,
    PulumiEnvironment,
    Secret,
    StackNotFoundError,
    StackOperations,
    StackTarget,
    StepResult,
)
from tests.helpers import LogCapture, ProbeTarget

pytestmark = pytest.mark.pulumi

SLOW = StackTarget("inc-slow", "slowtest", "tests.programs.slow:pulumi_program")


def stack_file(env: PulumiEnvironment, project: str, stack: str) -> Path:
    return env.data_dir / "pulumi-state" / ".pulumi" / "stacks" / project / f"{stack}.json"


def lock_files(env: PulumiEnvironment, project: str, stack: str) -> list[Path]:
    locks = env.data_dir / "pulumi-state" / ".pulumi" / "locks"
    return [p for p in locks.rglob("*.json") if f"/{project}/{stack}/" in str(p)]


def stack_tags(env: PulumiEnvironment, target: StackTarget) -> dict[str, str]:
    """The stack's tags, as the CLI lists them."""
    listed = subprocess.run(
        [str(env.pulumi_command), "stack", "tag", "ls", "--json", "--stack", target.name],
        cwd=env.workspace_dir(target.project),
        env={**os.environ, **env.variables()},
        capture_output=True,
        text=True,
        check=True,
    )
    tags: dict[str, str] = json.loads(listed.stdout)
    return tags


def context_of(up: StepResult) -> object:
    """The incident context the burner program wrote into its scratch directory."""
    return json.loads((Path(up.outputs["scratch_dir"].value) / "context.json").read_text())


async def test_stack_lifecycle(
    stack_ops: StackOperations,
    pulumi_env: PulumiEnvironment,
    probe_target: ProbeTarget,
    tmp_path: Path,
) -> None:
    """config (creating the stack) → up → refresh sees the probe change → preview is clean → destroy."""
    target = StackTarget("inc-lifecycle")
    await stack_ops.set_config(
        target,
        {
            "incident_id": "Q1X7KD4R9PVM2T",
            "incident": {"title": "checkout down"},
            "scratch_root": str(tmp_path / "scratch"),
            "target_url": probe_target.url,
            "request": "timezone",
        },
    )
    assert stack_file(pulumi_env, "burner", "inc-lifecycle").exists()

    up = await stack_ops.up(target)
    scratch = Path(up.outputs["scratch_dir"].value)
    assert scratch.is_dir()
    assert context_of(up) == {"incident_id": "Q1X7KD4R9PVM2T", "title": "checkout down"}
    assert up.outputs["probe_status"].value == 200
    assert up.outputs["probe_latency_ms"].value > 0
    assert up.outputs["scratch_access_key"].secret
    assert up.masked_outputs()["scratch_access_key"] == "[secret]"
    assert "utc_offset_seconds" in up.outputs["timezone"].value
    assert up.changes == {"create": 4}

    probe_target.status = 503
    refreshed = await stack_ops.refresh(target)
    assert refreshed.outputs["probe_status"].value == 503

    preview = await stack_ops.preview(target)
    assert set(preview.changes) == {"same"}
    outputs = await stack_ops.outputs(target)
    assert outputs.outputs["scratch_dir"].value == str(scratch)

    destroyed = await stack_ops.destroy(target, remove=True)
    assert destroyed.changes == {"delete": 4}
    assert not scratch.exists()
    assert not stack_file(pulumi_env, "burner", "inc-lifecycle").exists()
    with pytest.raises(StackNotFoundError):
        await stack_ops.outputs(target)
    assert "inc-lifecycle" not in await stack_ops.list_stacks("burner")


async def test_location_request(stack_ops: StackOperations, tmp_path: Path) -> None:
    """The tutorial's `/location`: hostname and addresses as outputs."""
    target = StackTarget("inc-location")
    up = await stack_ops.up(target, config={"request": "location", "scratch_root": str(tmp_path)})
    assert up.outputs["location"].value["hostname"] == os.uname().nodename
    await stack_ops.destroy(target, remove=True)


async def test_config_is_applied_just_before_the_operation_in_the_same_call(
    stack_ops: StackOperations, logs: LogCapture
) -> None:
    """`config=` is a set_config step told to `on_step` before the up, which already sees it."""
    target = StackTarget("inc-config")
    seen: list[StepResult] = []
    first = await stack_ops.up(
        target, config={"incident_id": "QFIRST"}, call=Call(on_step=seen.append)
    )
    assert [s.step for s in seen] == ["set_config", "up"]
    assert seen[-1] is first
    assert context_of(first) == {"incident_id": "QFIRST"}

    seen.clear()
    second = await stack_ops.up(  # `exists`: the stack is known to exist, no `stack select` needed
        target,
        config={"incident_id": "QSECOND", "request": "location"},
        call=Call(on_step=seen.append, exists=True),
    )
    assert [s.step for s in seen] == ["set_config", "up"]
    assert context_of(second) == {"incident_id": "QSECOND"}  # not the config of the call before
    assert "location" in second.outputs
    # One worker session each: the set_config and the up of a call are logged together.
    steps = [line["step"] for line in logs.events("stack.step")]
    assert steps == ["set_config", "up", "set_config", "up"]


async def test_a_short_secret_in_config_is_refused_before_anything_runs(
    stack_ops: StackOperations, pulumi_env: PulumiEnvironment, logs: LogCapture
) -> None:
    with pytest.raises(ValueError, match="'api_key'") as refused:
        await stack_ops.up(StackTarget("inc-short"), config={"api_key": Secret("hunter2")})
    assert "hunter2" not in str(refused.value)
    assert logs.events("stack.step") == []
    assert not stack_file(pulumi_env, "burner", "inc-short").exists()


async def test_export_to_saves_the_state_before_the_destroy(
    stack_ops: StackOperations, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = StackTarget("inc-export")
    planted = "s3cr3t-exported-value-456"
    await stack_ops.up(target, config={"access_token": Secret(planted)})
    monkeypatch.chdir(tmp_path)
    export = Path("postmortem") / "inc-export.json"  # relative to us, not to the CLI's workspace
    seen: list[StepResult] = []
    destroyed = await stack_ops.destroy(
        target, remove=True, export_to=export, call=Call(on_step=seen.append)
    )
    assert [s.step for s in seen] == ["export", "destroy"]
    assert destroyed.changes == {"delete": 2}
    state = json.loads(export.read_text())
    # The state as it was before the destroy: its resources are all there.
    types = [r["type"] for r in state["deployment"]["resources"]]
    assert any("ScratchDirectory" in t for t in types), types
    assert planted not in export.read_text()  # secrets stay encrypted


async def test_tags_are_set_when_the_operation_creates_the_stack(
    stack_ops: StackOperations, pulumi_env: PulumiEnvironment
) -> None:
    created = StackTarget("inc-tagged")
    await stack_ops.up(created, tags={"responder:incident": "QTAG"})
    assert stack_tags(pulumi_env, created)["responder:incident"] == "QTAG"
    # A stack that exists already keeps the tags it was created with.
    await stack_ops.up(created, tags={"responder:incident": "QOTHER"})
    assert stack_tags(pulumi_env, created)["responder:incident"] == "QTAG"

    previewed = StackTarget("inc-previewed")
    await stack_ops.preview(previewed, tags={"responder:incident": "QPREVIEW"})
    assert stack_tags(pulumi_env, previewed)["responder:incident"] == "QPREVIEW"


async def test_two_stacks_update_at_once(stack_ops: StackOperations, tmp_path: Path) -> None:
    a, b = StackTarget("inc-a"), StackTarget("inc-b")
    config = {"scratch_root": str(tmp_path)}
    ups = await asyncio.gather(stack_ops.up(a, config=config), stack_ops.up(b, config=config))
    assert [Path(u.outputs["scratch_dir"].value).name for u in ups] == ["inc-a", "inc-b"]


async def test_operations_on_one_stack_run_one_after_the_other(
    stack_ops: StackOperations, tmp_path: Path, logs: LogCapture
) -> None:
    """Two ups on one stack at once: both succeed because we serialize them, not Pulumi's lock."""
    target = StackTarget("inc-serial")
    await stack_ops.set_config(target, {"scratch_root": str(tmp_path)})
    first, second = await asyncio.gather(stack_ops.up(target), stack_ops.up(target))
    assert first.changes.get("create") == 2
    assert set(second.changes) == {"same"}
    ups = [line for line in logs.events("stack.step") if line["step"] == "up"]
    assert [line["outcome"] for line in ups] == ["succeeded", "succeeded"]


async def test_step_logs_have_no_secrets(
    stack_ops: StackOperations, pulumi_env: PulumiEnvironment, tmp_path: Path, logs: LogCapture
) -> None:
    target = StackTarget("inc-secrets")
    planted = "s3cr3t-config-value-123"
    up = await stack_ops.up(
        target, config={"scratch_root": str(tmp_path), "access_token": Secret(planted)}
    )
    await stack_ops.destroy(target, remove=True)

    secret_output = up.outputs["scratch_access_key"].value
    assert up.outputs["access_token"].value == planted  # the caller still gets the real value
    lines = logs.lines()  # every line parses as JSON
    steps = [line for line in lines if line["event"] == "stack.step"]
    assert [s["step"] for s in steps] == ["set_config", "up", "destroy"]
    for s in steps:
        assert s["stack"] == "inc-secrets"
        assert s["outcome"] == "succeeded"
        assert isinstance(s["duration_ms"], float) and s["duration_ms"] > 0
    engine = logs.events("pulumi.engine")
    assert any(e["op"] == "create" and "ScratchDirectory" in str(e["urn"]) for e in engine)
    passphrase = pulumi_env.passphrase()
    assert passphrase
    for secret in (passphrase, planted, secret_output):
        assert secret not in logs.text


async def test_timeout_stops_the_operation_and_leaves_the_stack_usable(
    stack_ops: StackOperations, pulumi_env: PulumiEnvironment, logs: LogCapture
) -> None:
    """The up times out; the set_config before it in the same call was done and told to `on_step`."""
    seen: list[StepResult] = []
    started = asyncio.get_running_loop().time()
    with pytest.raises(OperationTimeout) as timed_out:
        await stack_ops.up(
            SLOW, config={"sleep_seconds": "60"}, call=Call(timeout=8, on_step=seen.append)
        )
    assert asyncio.get_running_loop().time() - started < 40
    assert timed_out.value.step == "up"
    assert [s.step for s in seen] == ["set_config"]
    assert lock_files(pulumi_env, "slowtest", "inc-slow") == []

    up = await stack_ops.up(SLOW, config={"sleep_seconds": "0"})
    assert up.outputs["slept"].value == 0
    assert any(
        line["step"] == "repair" and line["outcome"] == "succeeded"
        for line in logs.events("stack.step")
    )
