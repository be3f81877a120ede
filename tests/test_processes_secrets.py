"""Secret config values never appear in a process's arguments or environment, where any local user
could read them (/proc/<pid>/cmdline), and still reach the program intact."""

import asyncio
import contextlib
import threading
import uuid
from pathlib import Path

import pytest

from responder.logs import Redactor
from responder.stacks import (
    OperationCancelled,
    PulumiEnvironment,
    PulumiOperations,
    Secret,
    StackError,
    StackTarget,
)
from tests.helpers import CASE_VARIABLE, LogCapture, marked_processes, until

pytestmark = pytest.mark.pulumi

ECHO = "tests.programs.echo_secret:pulumi_program"
LEAKY = "tests.programs.leaky_failure:pulumi_program"
STUBBORN_SECRET = "tests.programs.stubborn_secret:pulumi_program"


class Watcher(threading.Thread):
    """Records the arguments and environment of every live process of the test, scanning /proc
    every few milliseconds (a `pulumi config` CLI lives for a few hundred)."""

    def __init__(self, case: str) -> None:
        super().__init__(daemon=True)
        self.case = case
        self.seen: dict[tuple[int, tuple[str, ...]], bytes] = {}  # (pid, argv) → environ
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.005):
            for pid, args in marked_processes(CASE_VARIABLE, self.case).items():
                with contextlib.suppress(OSError):
                    self.seen[pid, tuple(args)] = Path(f"/proc/{pid}/environ").read_bytes()

    def stop(self) -> None:
        self.stopping.set()
        self.join()


async def test_secret_config_is_not_in_any_process_arguments(
    pulumi_env: PulumiEnvironment, logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = uuid.uuid4().hex
    monkeypatch.setenv(CASE_VARIABLE, case)
    # Characters an argv `key=value`, or a value read as a line from stdin, could mangle.
    token, other = "tok=3n with spaces\n", f"second-secret-{uuid.uuid4().hex}"
    ops = PulumiOperations(pulumi_env, redactor=logs.redactor, warm_workers=0)
    await ops.start()
    watcher = Watcher(case)
    watcher.start()
    try:
        target = StackTarget("inc-argv", "echo", ECHO)
        config = {"plain": "visible", "token": Secret(token), "other": Secret(other)}
        up = await ops.up(target, config=config)
    finally:
        watcher.stop()
        await ops.close()

    assert up.outputs["token"].value == token and up.outputs["token"].secret
    assert up.outputs["other"].value == other and up.outputs["other"].secret
    assert up.outputs["plain"].value == "visible"
    # The CLIs storing the secrets were seen while they ran, and so was every other one.
    commands = [args for _, args in watcher.seen]
    assert any("config" in args and "--secret" in args for args in commands), commands
    assert any("up" in args for args in commands), commands
    for (_, args), environ in watcher.seen.items():
        for secret in (token, other):
            assert secret.encode() not in environ
            assert not any(secret.strip() in arg for arg in args), args


async def test_a_failure_quoting_secret_config_set_before_a_restart_is_masked(
    pulumi_env: PulumiEnvironment, logs: LogCapture
) -> None:
    """The redactor learns secret config as it is set; a daemon restarted since (or another node)
    has not seen it set, and still must not log, keep or note it when a failure quotes it: the
    CLI masks the secret config it decrypts in everything it reports."""
    token = f"set-before-the-restart-{uuid.uuid4().hex}"
    target = StackTarget("inc-restarted", "leaky", LEAKY)
    before = PulumiOperations(pulumi_env, redactor=Redactor(), warm_workers=0)  # not the log's
    await before.start()
    try:
        up = await before.up(target, config={"token": Secret(token), "fail": "false"})
        assert up.outputs["token"].secret
    finally:
        await before.close()

    after = PulumiOperations(pulumi_env, redactor=logs.redactor, warm_workers=0)
    await after.start()
    try:
        with pytest.raises(StackError) as failed:
            await after.up(target, config={"fail": "true"})
    finally:
        await after.close()
    assert "cannot reach the service with token [secret]" in str(failed.value)
    assert token not in str(failed.value)
    assert logs.events("stack.step") and token not in logs.text


class FileWatcher(threading.Thread):
    """Records every file under `roots` that held `text`, scanning them every few milliseconds (the
    repair's state file lives for about a second)."""

    def __init__(self, roots: list[Path], text: str) -> None:
        super().__init__(daemon=True)
        self.roots, self.text = roots, text.encode()
        self.found: set[Path] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.005):
            for root in self.roots:
                for path in root.rglob("*"):
                    with contextlib.suppress(OSError):
                        if path.is_file() and self.text in path.read_bytes():
                            self.found.add(path)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


async def test_a_repair_never_writes_the_decrypted_state_to_disk(
    pulumi_env: PulumiEnvironment,
    logs: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An operation stopped mid-create leaves a pending create, which the repair clears by exporting
    the state and importing it back. The state holds a secret output: the SDK's export decrypts
    it, and its import wrote that to the system's temp dir (left there if the import failed). The
    repair's state file is the workspace's, encrypted as the backend keeps it, and then removed."""
    case = uuid.uuid4().hex
    monkeypatch.setenv(CASE_VARIABLE, case)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the workers' and their CLIs' temp dir
    token = f"state-secret-{uuid.uuid4().hex}"
    target = StackTarget("inc-repair", "stubbornsecret", STUBBORN_SECRET)
    workspace = pulumi_env.workspace_dir(target.project)
    ops = PulumiOperations(pulumi_env, redactor=logs.redactor, warm_workers=0, kill_grace=2.0)
    await ops.start()
    watcher = Watcher(case)
    files = FileWatcher([temp, workspace, pulumi_env.data_dir / "pulumi-state"], token)
    try:
        up = await ops.up(target, config={"token": Secret(token)})
        assert up.outputs["token"].value == token and up.outputs["token"].secret
        watcher.start()
        files.start()
        started = tmp_path / "started"
        config = {"started_file": str(started), "sleep_seconds": "120"}
        creating = asyncio.create_task(ops.up(target, config=config))
        await until(started.exists, "the stubborn resource being created", 90, 0.1)
        assert await ops.cancel(target)
        with pytest.raises(OperationCancelled):
            await creating
    finally:
        watcher.stop()
        if files.is_alive():
            files.stop()
        await ops.close()

    commands = [args for _, args in watcher.seen]
    assert any("import" in args for args in commands), commands  # its pending create cleared
    assert not any("export" in args and "--show-secrets" in args for args in commands), commands
    assert files.found == set()
    assert list(temp.iterdir()) == [] and list(workspace.glob(".repair-*")) == []
    [repaired] = [line for line in logs.events("stack.step") if line["step"] == "repair"]
    assert repaired["outcome"] == "succeeded"
