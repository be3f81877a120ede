"""Secret config values never appear in a process's arguments or environment, where any local user
could read them (/proc/<pid>/cmdline), and still reach the program intact."""

import contextlib
import threading
import uuid
from pathlib import Path

import pytest

from responder.logs import Redactor
from responder.stacks import PulumiEnvironment, PulumiOperations, Secret, StackError, StackTarget
from tests.helpers import CASE_VARIABLE, LogCapture, marked_processes

pytestmark = pytest.mark.pulumi

ECHO = "tests.programs.echo_secret:pulumi_program"
LEAKY = "tests.programs.leaky_failure:pulumi_program"


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
