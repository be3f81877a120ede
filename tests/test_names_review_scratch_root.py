"""The scratch root comes from the daemon's environment only, never from stack config or state."""

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from burner_program import providers
from burner_program.providers import UnsafeScratchPathError, _ScratchDirectoryProvider
from playbooks.diagnostics import host_diagnostics
from responder.config import Settings
from responder.stacks import PulumiEnvironment, StackError, StackOperations, StackTarget
from responder.stacks.environment import SCRATCH_ROOT_VARIABLE
from responder.stacks.results import OutputValue, StepResult
from tests.helpers import API_TOKEN, Client
from tests.test_names_api import rewrite_as_legacy_state, state_file
from tests.test_names_params import RecordingStack, context

MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory the attacker would like removed, holding a file: outside any scratch root."""
    path = tmp_path / "rv" / "victim" / "important"
    path.mkdir(parents=True)
    (path / "data").write_text("keep")
    return path


@pytest.fixture(params=["daemon", "by hand"])
def trusted_root(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The root the provider trusts: the daemon's variable, or the fixed default without it."""
    if request.param == "daemon":
        monkeypatch.setenv(SCRATCH_ROOT_VARIABLE, str(tmp_path / "data" / "scratch"))
        return tmp_path / "data" / "scratch"
    monkeypatch.delenv(SCRATCH_ROOT_VARIABLE, raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() caches TMPDIR once read
    return tmp_path / "tmp" / "responder-scratch"


def test_the_provider_and_the_daemon_name_the_same_variable() -> None:
    assert providers.SCRATCH_ROOT_VARIABLE == SCRATCH_ROOT_VARIABLE


def test_the_trusted_root_is_the_variable_else_the_fixed_default(trusted_root: Path) -> None:
    assert providers.scratch_root() == os.path.realpath(trusted_root)


def test_legacy_state_without_a_root_cannot_delete_outside_the_trusted_root(
    trusted_root: Path, victim: Path
) -> None:
    """The review's repro: old code took the path's own parent as its root, so any path passed."""
    with pytest.raises(UnsafeScratchPathError, match="not strictly inside"):
        _ScratchDirectoryProvider().delete(str(victim), {"path": str(victim), "context": {}})
    assert (victim / "data").read_text() == "keep"


def test_a_root_recorded_in_state_is_not_trusted(trusted_root: Path, victim: Path) -> None:
    provider = _ScratchDirectoryProvider()
    props = {"path": str(victim), "root": str(victim.parent), "context": {}}
    with pytest.raises(UnsafeScratchPathError):
        provider.delete(str(victim), props)
    with pytest.raises(UnsafeScratchPathError):
        provider.read(str(victim), props)  # no reading `<anywhere>/context.json` either
    with pytest.raises(UnsafeScratchPathError):
        provider.update(str(victim), props, props)
    with pytest.raises(UnsafeScratchPathError):
        provider.create({**props, "path": str(victim / "new")})
    assert sorted(p.name for p in victim.iterdir()) == ["data"]


def test_legacy_state_inside_the_trusted_root_is_still_deleted(trusted_root: Path) -> None:
    legacy = trusted_root / "Q1X7KD4R9PVM2T"  # the old layout: <root>/<incident id>
    legacy.mkdir(parents=True)
    (legacy / "context.json").write_text("{}")
    _ScratchDirectoryProvider().delete(str(legacy), {"path": str(legacy), "context": {}})
    assert not legacy.exists() and trusted_root.is_dir()


def test_every_worker_gets_the_data_dirs_scratch_root(pulumi_env: PulumiEnvironment) -> None:
    assert pulumi_env.variables()[SCRATCH_ROOT_VARIABLE] == str(pulumi_env.data_dir / "scratch")
    assert Path(pulumi_env.variables()[SCRATCH_ROOT_VARIABLE]).is_absolute()


def test_a_daemon_started_from_a_workers_environment_still_starts(
    pulumi_env: PulumiEnvironment,
) -> None:
    """Unknown RESPONDER_* variables stop the daemon: the scratch root's must not be one."""
    assert Settings.load(pulumi_env.variables()).data_dir == Settings().data_dir


class ConfigRecordingStack(RecordingStack):
    """Records the config a playbook sets; its up reports a location."""

    def __init__(self) -> None:
        super().__init__()
        self.configs: list[dict[str, object]] = []

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        self.configs.append(dict(config))
        return await super().set_config(config)

    async def up(self) -> StepResult:
        await super().up()
        return StepResult("up", self.name, 0.0, outputs={"location": OutputValue({})})


async def test_host_diagnostics_sets_no_scratch_root_whatever_its_params() -> None:
    stack = ConfigRecordingStack()
    await host_diagnostics(context({"request": "location", "scratch_root": "/s"}, stack))
    assert stack.configs == [{"request": "location"}]
    assert stack.calls == ["set_config", "up", "destroy"]


def persisted_config(data_dir: Path, stack: str) -> str:
    """The stack's config file in the daemon's workspace, which outlives every run."""
    return (data_dir / "workspaces" / "burner" / f"Pulumi.{stack}.yaml").read_text()


@pytest.mark.pulumi
async def test_a_persisted_scratch_root_in_stack_config_is_ignored(
    stack_ops: StackOperations, data_dir: Path, tmp_path: Path
) -> None:
    """Config the old version persisted stays in force for refresh and up: it must not matter.

    The inline program (in the worker) and the dynamic provider (`pulumi.dynamic`, started
    by the CLI) both check the path against their own environment's root: if the variable did not
    reach the provider, its default root would refuse this path and the up would fail.
    """
    elsewhere = tmp_path / "elsewhere"
    target = StackTarget("incident-persisted")
    await stack_ops.set_config(target, {"scratch_root": str(elsewhere)})
    assert f"burner:scratch_root: {elsewhere}" in persisted_config(data_dir, "incident-persisted")
    expected = data_dir.resolve() / "scratch" / "burner" / "incident-persisted"

    up = await stack_ops.up(target)
    assert up.outputs["scratch_dir"].value == str(expected)
    assert (expected / "context.json").exists()
    await stack_ops.refresh(target)
    assert (await stack_ops.up(target)).outputs["scratch_dir"].value == str(expected)
    assert not elsewhere.exists()

    await stack_ops.destroy(target, remove=True)
    assert not expected.exists()


@pytest.mark.pulumi
async def test_a_destroy_of_legacy_state_naming_any_path_is_refused(
    stack_ops: StackOperations, data_dir: Path, victim: Path
) -> None:
    """The review's repro through the real CLI: state as the old program wrote it, no root."""
    target = StackTarget("legacy-victim")
    await stack_ops.up(target)
    rewrite_as_legacy_state(data_dir, "legacy-victim", victim)
    with pytest.raises(StackError, match="refusing scratch directory"):
        await stack_ops.refresh(target)
    with pytest.raises(StackError, match="refusing scratch directory"):
        await stack_ops.destroy(target, remove=True)
    assert (victim / "data").read_text() == "keep"
    assert state_file(data_dir, "legacy-victim").exists()  # kept for the operator to look at


@pytest.mark.pulumi
async def test_the_built_in_playbooks_provision_under_the_trusted_root_only(
    make_client: MakeClient, data_dir: Path, tmp_path: Path
) -> None:
    """A stack config planted by the old version, then the built-in provisioning playbook."""
    workspace = data_dir / "workspaces" / "burner"
    workspace.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    planted = f"config:\n  burner:scratch_root: {elsewhere}\n"
    (workspace / "Pulumi.incident-QPLANTED.yaml").write_text(planted)

    client = await make_client(job_max_attempts=1)
    for incident_id in ("QPLANTED", "QFRESH"):
        answer = await client.http.post(
            "/playbooks/provision_diagnostics/run?wait=120",
            json={"incident_id": incident_id},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        job = await answer.json()
        assert answer.status == 200 and job["status"] == "succeeded", job
        scratch_dir = data_dir.resolve() / "scratch" / "burner" / f"incident-{incident_id}"
        assert job["outputs"]["scratch_dir"] == str(scratch_dir)
    assert not elsewhere.exists()
    assert "burner:scratch_root" in persisted_config(data_dir, "incident-QPLANTED")  # in force
    assert "burner:scratch_root" not in persisted_config(data_dir, "incident-QFRESH")
