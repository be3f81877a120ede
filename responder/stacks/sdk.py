"""Where the worker reaches past the public Pulumi Automation API, and why; nothing else does."""

# Each workaround saves a CLI process or keeps a secret out of reach. They rely on SDK internals
# (checked against pulumi 3.272): an SDK upgrade that breaks one fails the `pulumi` tests.

import contextlib
import os
import subprocess
import types
from collections.abc import Callable, Iterator
from pathlib import Path

from pulumi import automation as auto
from pulumi.automation import events
from pulumi.automation._stack import StackInitMode  # not exported by pulumi.automation
from semver import VersionInfo

OnEvent = Callable[[events.EngineEvent], None]


def known_command(command: str, version: str) -> auto.PulumiCommand:
    """A PulumiCommand that trusts the daemon's version check: its constructor would spawn
    `pulumi version` in every worker. Built without __init__, with the two attributes it sets."""
    cmd = auto.PulumiCommand.__new__(auto.PulumiCommand)
    cmd.command = command
    cmd.version = VersionInfo.parse(version.lstrip("v"))
    return cmd


def known_stack(name: str, workspace: auto.LocalWorkspace) -> auto.Stack:
    """A handle on a stack the daemon knows exists, without `pulumi stack select`: every command names
    the stack with --stack anyway, so the select (run by Stack.__init__) is a CLI process spent on
    nothing. Built without __init__, with the three attributes it sets."""
    stack = object.__new__(auto.Stack)
    stack.name, stack.workspace, stack._mode = name, workspace, StackInitMode.SELECT
    return stack


def set_secret_config(stack: auto.Stack, key: str, value: str) -> None:
    """`pulumi config set --secret KEY` with the value on stdin. The SDK's set_config puts the value
    in the CLI's argv, which any local user can read in /proc/<pid>/cmdline. Failures are raised as
    the SDK would (its error factory), so they are classified like any other CLI error."""
    workspace = stack.workspace
    assert isinstance(workspace, auto.LocalWorkspace)
    done = subprocess.run(
        [
            workspace.pulumi_command.command,
            "--non-interactive",
            *("config", "set", "--secret", "--stack", stack.name, "--", key),
        ],
        input=value + "\n",  # the CLI drops one trailing newline from what it reads
        capture_output=True,
        text=True,
        cwd=workspace.work_dir,
        env={**os.environ, "PULUMI_AUTOMATION_API": "true"},  # PULUMI_HOME is in ours already
        check=False,
    )
    if done.returncode != 0:
        raise auto.errors.create_command_error(
            auto.CommandResult(stdout=done.stdout, stderr=done.stderr, code=done.returncode)
        )


def export_state(stack: auto.Stack, path: Path) -> None:
    """`pulumi stack export --file PATH` through the stack's private command runner: the public
    `export_stack()` passes --show-secrets, and the postmortem record must keep secrets encrypted."""
    stack._run_pulumi_cmd_sync(["stack", "export", "--file", str(path)])


@contextlib.contextmanager
def summary_from_events(stack: auto.Stack, on_event: OnEvent) -> Iterator[OnEvent]:
    """The SDK runs `pulumi stack history` (`Stack.info`) after up, refresh and destroy only to build
    their summary; the engine's summary event already carries the same change counts. Yields the
    event callback to pass to the operation, and shadows `info` on this instance meanwhile: one CLI
    process fewer each time."""
    changes: dict[str, int] = {}

    def capture(event: events.EngineEvent) -> None:
        if event.summary_event is not None:
            for op, count in (event.summary_event.resource_changes or {}).items():
                changes[op] = count
        on_event(event)

    # An instance attribute shadowing the method, set through __dict__ because it replaces a method.
    stack.__dict__["info"] = lambda *_args, **_kwargs: types.SimpleNamespace(
        resource_changes=changes
    )
    try:
        yield capture
    finally:
        del stack.__dict__["info"]
