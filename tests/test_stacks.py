"""The stack-operations layer against the real pulumi CLI and a temporary file backend."""

import asyncio
import json
import os
from pathlib import Path

import pytest

from responder.stacks import (
    DestroyNotAllowed,
    OperationTimeout,
    PulumiEnvironment,
    Secret,
    StackNotFoundError,
    StackOperations,
)
from tests.helpers import LogCapture, ProbeTarget

pytestmark = pytest.mark.pulumi


def stack_file(env: PulumiEnvironment, project: str, stack: str) -> Path:
    return env.data_dir / "pulumi-state" / ".pulumi" / "stacks" / project / f"{stack}.json"


def lock_files(env: PulumiEnvironment, project: str, stack: str) -> list[Path]:
    locks = env.data_dir / "pulumi-state" / ".pulumi" / "locks"
    return [p for p in locks.rglob("*.json") if f"/{project}/{stack}/" in str(p)]


async def test_stack_lifecycle(
    stack_ops: StackOperations,
    pulumi_env: PulumiEnvironment,
    probe_target: ProbeTarget,
    tmp_path: Path,
) -> None:
    """create → config → up → refresh sees the probe change → preview is clean → guarded destroy."""
    stack = stack_ops.stack("inc-lifecycle")
    await stack.create_or_select()
    assert stack_file(pulumi_env, "burner", "inc-lifecycle").exists()

    await stack.set_config(
        {
            "incident_id": "Q1X7KD4R9PVM2T",
            "incident": {"title": "checkout down"},
            "scratch_root": str(tmp_path / "scratch"),
            "target_url": probe_target.url,
            "request": "timezone",
        }
    )
    up = await stack.up()
    scratch = Path(up.outputs["scratch_dir"].value)
    assert scratch.is_dir()
    context = json.loads((scratch / "context.json").read_text())
    assert context == {"incident_id": "Q1X7KD4R9PVM2T", "title": "checkout down"}
    assert up.outputs["probe_status"].value == 200
    assert up.outputs["probe_latency_ms"].value > 0
    assert up.outputs["scratch_access_key"].secret
    assert up.masked_outputs()["scratch_access_key"] == "[secret]"
    assert "utc_offset_seconds" in up.outputs["timezone"].value
    assert up.changes == {"create": 4}

    probe_target.status = 503
    refreshed = await stack.refresh()
    assert refreshed.outputs["probe_status"].value == 503

    preview = await stack.preview()
    assert set(preview.changes) == {"same"}

    with pytest.raises(DestroyNotAllowed):
        await stack.destroy()
    assert scratch.is_dir()

    destroyed = await stack.destroy(allow=True, remove=True)
    assert destroyed.changes == {"delete": 4}
    assert not scratch.exists()
    assert not stack_file(pulumi_env, "burner", "inc-lifecycle").exists()
    with pytest.raises(StackNotFoundError):
        await stack.outputs()


async def test_location_request(stack_ops: StackOperations, tmp_path: Path) -> None:
    """The tutorial's `/location`: hostname and addresses as outputs."""
    stack = stack_ops.stack("inc-location")
    await stack.set_config({"request": "location", "scratch_root": str(tmp_path)})
    up = await stack.up()
    assert up.outputs["location"].value["hostname"] == os.uname().nodename
    await stack.destroy(allow=True, remove=True)


async def test_two_stacks_update_at_once(stack_ops: StackOperations, tmp_path: Path) -> None:
    a, b = stack_ops.stack("inc-a"), stack_ops.stack("inc-b")
    for s in (a, b):
        await s.set_config({"scratch_root": str(tmp_path)})
    ups = await asyncio.gather(a.up(), b.up())
    assert [Path(u.outputs["scratch_dir"].value).name for u in ups] == ["inc-a", "inc-b"]


async def test_operations_on_one_stack_run_one_after_the_other(
    stack_ops: StackOperations, tmp_path: Path, logs: LogCapture
) -> None:
    """Two ups on one stack at once: both succeed because we serialize them, not Pulumi's lock."""
    stack = stack_ops.stack("inc-serial")
    await stack.set_config({"scratch_root": str(tmp_path)})
    first, second = await asyncio.gather(stack.up(), stack.up())
    assert first.changes.get("create") == 2
    assert set(second.changes) == {"same"}
    ups = [line for line in logs.events("stack.step") if line["step"] == "up"]
    assert [line["outcome"] for line in ups] == ["succeeded", "succeeded"]


async def test_step_logs_have_no_secrets(
    stack_ops: StackOperations, pulumi_env: PulumiEnvironment, tmp_path: Path, logs: LogCapture
) -> None:
    stack = stack_ops.stack("inc-secrets")
    await stack.create_or_select()
    planted = "s3cr3t-config-value-123"
    await stack.set_config({"scratch_root": str(tmp_path), "access_token": Secret(planted)})
    up = await stack.up()
    await stack.destroy(allow=True, remove=True)

    secret_output = up.outputs["scratch_access_key"].value
    assert up.outputs["access_token"].value == planted  # the caller still gets the real value
    lines = logs.lines()  # every line parses as JSON
    steps = [line for line in lines if line["event"] == "stack.step"]
    assert [s["step"] for s in steps] == ["select", "set_config", "up", "destroy"]
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
    stack = stack_ops.stack(
        "inc-slow", project="slowtest", program="tests.programs.slow:pulumi_program"
    )
    await stack.set_config({"sleep_seconds": "60"})
    started = asyncio.get_running_loop().time()
    with pytest.raises(OperationTimeout):
        await stack.up(timeout=8)
    assert asyncio.get_running_loop().time() - started < 40
    assert lock_files(pulumi_env, "slowtest", "inc-slow") == []

    await stack.set_config({"sleep_seconds": "0"})
    up = await stack.up()
    assert up.outputs["slept"].value == 0
    assert any(
        line["step"] == "repair" and line["outcome"] == "succeeded"
        for line in logs.events("stack.step")
    )
