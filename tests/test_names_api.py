"""Odd incident ids through the real daemon and CLI: a stack each, and no destroy outside scratch."""

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from responder.playbook import Context, on, playbook
from responder.stacks import StackError, StackOperations, StackTarget
from tests.helpers import API_TOKEN, Client

pytestmark = pytest.mark.pulumi

MakeClient = Callable[..., Awaitable[Client]]

ODD_IDS = [
    "..",
    ".",
    "../../x",
    "x" * 5000,
    "p" * 80 + "-first",
    "p" * 80 + "-second",
]


def plant_sentinels(data_dir: Path) -> list[Path]:
    """A file in the scratch root, one in the data dir beside it, one beside the data dir."""
    scratch = data_dir / "scratch"
    scratch.mkdir(exist_ok=True)
    sentinels = [scratch / "sentinel", data_dir / "sentinel", data_dir.parent / "sentinel"]
    for path in sentinels:
        path.write_text("keep")
    return sentinels


async def test_odd_incident_ids_get_their_own_stacks_and_destroy_only_inside_scratch(
    make_client: MakeClient, data_dir: Path
) -> None:
    scratch_dirs: dict[str, Path] = {}

    @playbook(allow_destroy=True)
    @on("test.names")
    async def provision_and_destroy(ctx: Context) -> None:
        """Up the incident's burner stack, note its scratch directory, destroy it."""
        assert ctx.incident is not None
        await ctx.stack.set_config({"incident_id": ctx.incident.id})
        up = await ctx.stack.up()
        scratch_dirs[ctx.incident.id] = Path(up.outputs["scratch_dir"].value)
        assert scratch_dirs[ctx.incident.id].is_dir()
        await ctx.stack.destroy(remove=True)

    client = await make_client([provision_and_destroy], job_max_attempts=1)
    sentinels = plant_sentinels(data_dir)
    scratch_root = (data_dir / "scratch").resolve()
    stacks: dict[str, str] = {}
    for incident_id in ODD_IDS:
        answer = await client.http.post(
            "/playbooks/provision_and_destroy/run?wait=120",
            json={"incident_id": incident_id},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        job = await answer.json()
        if answer.status == 400:  # refusing an id outright is also safe
            continue
        assert answer.status == 200 and job["status"] == "succeeded", (
            incident_id[:90],
            job["error"],
        )
        stacks[incident_id] = job["stack"]
        path = scratch_dirs[incident_id]
        assert path.parent.parent == scratch_root, path  # <scratch root>/<project>/<stack>
        assert not path.exists()
        for sentinel in sentinels:
            assert sentinel.read_text() == "keep", (incident_id[:90], sentinel)
        assert (data_dir / "responder.db").exists()

    assert len(set(stacks.values())) == len(stacks) >= 5, stacks  # one stack per id
    assert len(set(scratch_dirs.values())) == len(scratch_dirs)
    assert list(state_file(data_dir, "x").parent.glob("*.json")) == []  # every stack removed


def state_file(data_dir: Path, stack: str) -> Path:
    return data_dir / "pulumi-state" / ".pulumi" / "stacks" / "burner" / f"{stack}.json"


def rewrite_as_legacy_state(data_dir: Path, stack: str, legacy_path: Path) -> None:
    """Make the checkpoint name the scratch directory as the first program did: `<root>/<id>`."""
    checkpoint = json.loads(state_file(data_dir, stack).read_text())
    [resource] = [
        r
        for r in checkpoint["checkpoint"]["latest"]["resources"]
        if r["type"].endswith("ScratchDirectory")
    ]
    resource["id"] = str(legacy_path)
    for props in (resource["inputs"], resource["outputs"]):
        props["path"] = str(legacy_path)
    state_file(data_dir, stack).write_text(json.dumps(checkpoint))


async def test_state_written_by_the_old_program_destroys_inside_scratch_only(
    stack_ops: StackOperations, data_dir: Path
) -> None:
    sentinels = plant_sentinels(data_dir)
    scratch_root = data_dir / "scratch"
    inside, escaping = StackTarget("legacy-inside"), StackTarget("legacy-escaping")
    for target in (inside, escaping):
        await stack_ops.up(target)

    legacy = scratch_root / "QLEGACY"  # the old layout: <scratch_root>/<incident id>
    (scratch_root / "burner" / "legacy-inside").rename(legacy)
    rewrite_as_legacy_state(data_dir, "legacy-inside", legacy)
    await stack_ops.destroy(inside, remove=True)
    assert not legacy.exists()
    assert not state_file(data_dir, "legacy-inside").exists()

    # What incident id `..` recorded before: `<scratch_root>/..`, the data dir itself.
    rewrite_as_legacy_state(data_dir, "legacy-escaping", scratch_root / "..")
    with pytest.raises(StackError, match="refusing scratch directory"):
        await stack_ops.destroy(escaping, remove=True)
    assert all(s.read_text() == "keep" for s in sentinels)
    assert (data_dir / "pulumi-state").is_dir()
    assert state_file(data_dir, "legacy-escaping").exists()  # kept for the operator to look at


async def test_the_program_refuses_a_scratch_directory_leading_outside_its_root(
    stack_ops: StackOperations, data_dir: Path, tmp_path: Path
) -> None:
    scratch_root, outside = data_dir / "scratch", tmp_path / "outside"
    scratch_root.mkdir()
    outside.mkdir()
    (scratch_root / "burner").symlink_to(outside)  # the project's directory leads elsewhere
    with pytest.raises(StackError, match="UnsafeScratchPathError: refusing scratch directory"):
        await stack_ops.up(StackTarget("incident-escape"))
    assert list(outside.iterdir()) == []
