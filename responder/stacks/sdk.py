"""Where the worker reaches past the public Pulumi Automation API, and why; nothing else does."""

# Each workaround saves a CLI process or keeps a secret out of reach. They rely on SDK internals
# (checked against pulumi 3.272): an SDK upgrade that breaks one fails the `pulumi` tests.

import contextlib
import json
import math
import os
import subprocess
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi import automation as auto
from pulumi.automation import events
from pulumi.automation._stack import StackInitMode  # not exported by pulumi.automation
from pulumi.runtime import settings as runtime_settings
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


def import_state(stack: auto.Stack, path: Path) -> None:
    """`pulumi stack import --file PATH`, as `export_state`: the public `import_stack()` writes the
    state it is given to a file of the system's temp dir, left there if the import fails."""
    stack._run_pulumi_cmd_sync(["stack", "import", "--file", str(path)])


# The key by which the engine marks a secret value in the values it reports (the value itself is
# replaced by "[secret]" unless --show-secrets is given).
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"
STACK_TYPE = "pulumi:pulumi:Stack"
SECRET_SHOWN = "[secret]"  # what `pulumi stack output` shows of a secret without --show-secrets


class ProgramOutputs:
    """The inline program, run so that the stack's outputs are kept as it registers them with the
    engine: the values the engine stores, each secret still marked as such (the serialized form
    carries the plaintext inside a secret marker). The program runs in this process, so after an
    `up` its outputs need no `pulumi stack output --show-secrets` (a CLI process that decrypts).

    The engine's own events cannot replace this: they report a secret as "[secret]" even with
    --show-secrets. Recorded through a wrapper around the runtime's resource monitor client."""

    def __init__(self, program: Callable[[], Any]) -> None:
        self.program = program
        self.registered: struct_pb2.Struct | None = None  # the stack's, from the last run

    def __call__(self) -> Any:
        monitor = runtime_settings.get_monitor()
        if monitor is not None:  # a context variable: set for this run of the program only
            runtime_settings.SETTINGS.monitor = _RecordingMonitor(monitor, self)
        return self.program()

    def take(self) -> auto.OutputMap | None:
        """The outputs the last run registered, then forgotten; None if it registered none, or any
        value this cannot read back as the CLI shows it (unknown, asset, archive, reference)."""
        registered, self.registered = self.registered, None
        if registered is None:
            return None
        try:
            values = json_format.MessageToDict(registered)
            return {
                name: auto.OutputValue(value=_plain(value), secret=_inside(value, _secret_marker))
                for name, value in values.items()
            }
        except _Unreadable:
            return None


class _RecordingMonitor:
    """Forwards every call to the monitor client; keeps the stack resource's registered outputs."""

    def __init__(self, monitor: Any, outputs: ProgramOutputs) -> None:
        self._monitor = monitor
        self._outputs = outputs

    def RegisterResourceOutputs(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        answer = self._monitor.RegisterResourceOutputs(request, *args, **kwargs)
        if request.urn.split("::")[2:3] == [STACK_TYPE]:  # once the engine has taken them
            self._outputs.registered = request.outputs
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._monitor, name)


# How the SDK serializes a secret for the engine: {SECRET_SIGNATURE: SECRET_VALUE, "value": ...}.
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # a value not known yet (previews)


class _Unreadable(Exception):
    """A registered value the CLI would show differently from its plain JSON."""


def _secret_marker(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIGNATURE) == SECRET_VALUE


def _plain(value: Any) -> Any:
    """A registered value as `pulumi stack output --json --show-secrets` prints it."""
    if isinstance(value, dict):
        if SECRET_SIGNATURE in value:
            if not _secret_marker(value):
                raise _Unreadable
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value == UNKNOWN:
        raise _Unreadable
    if (
        isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
        and abs(value) < 1e21
    ):
        return int(value)  # numbers travel as doubles; the CLI prints whole ones without ".0"
    return value


@contextlib.contextmanager
def results_from_events(
    stack: auto.Stack, on_event: OnEvent, program: ProgramOutputs | None = None
) -> Iterator[OnEvent]:
    """What the SDK asks the CLI for after up, refresh and destroy that the engine's events or the
    program's own run already say. Yields the event callback to pass to the operation, and
    meanwhile shadows on this instance:

    - `info` (`pulumi stack history`, run only to build the summary): the summary event carries the
      same change counts;
    - `outputs` (`pulumi stack output` twice, masked and with secrets, to tell secrets apart): the
      outputs `program` registered in this run, if it did (no process); otherwise the stack
      resource's outputs event marks each secret, so one call with secrets is enough. Marked
      anywhere inside an output, the whole output counts as secret (the SDK looks at the top level
      only, and would show a secret nested in a map).

    Each shadow saves one CLI process per operation."""
    if program is not None:
        program.registered = None  # a previous step's run is not this one's
    changes: dict[str, int] = {}
    reported: list[Mapping[str, Any]] = []  # the stack's outputs as the engine last reported them

    def capture(event: events.EngineEvent) -> None:
        if event.summary_event is not None:
            for op, count in (event.summary_event.resource_changes or {}).items():
                changes[op] = count
        done = event.res_outputs_event
        if done is not None and done.metadata.type == STACK_TYPE and done.metadata.new is not None:
            reported[:] = [done.metadata.new.outputs or {}]
        on_event(event)

    def outputs() -> auto.OutputMap:
        registered = program.take() if program is not None else None
        if registered is not None:
            return registered
        if not reported:  # no outputs event (nothing ran the program): ask twice
            return read_outputs(stack)
        return _marked_outputs(stack, reported[0], _signed)

    # Instance attributes shadowing methods, set through __dict__ because they replace methods.
    stack.__dict__["info"] = lambda *_args, **_kwargs: types.SimpleNamespace(
        resource_changes=changes
    )
    stack.__dict__["outputs"] = outputs
    try:
        yield capture
    finally:
        del stack.__dict__["info"], stack.__dict__["outputs"]


def read_outputs(stack: auto.Stack) -> auto.OutputMap:
    """The stack's outputs, as the SDK's `outputs()` reads them (masked, then with secrets), but an
    output with a secret anywhere inside it counts as secret: the SDK looks at the top level only."""
    masked = json.loads(stack._run_pulumi_cmd_sync(["stack", "output", "--json"]).stdout)
    return _marked_outputs(stack, masked, lambda value: bool(value == SECRET_SHOWN))


def _marked_outputs(
    stack: auto.Stack, marks: Mapping[str, Any], is_secret: Callable[[Any], bool]
) -> auto.OutputMap:
    """The outputs with their values (`stack output --show-secrets`), each secret where `marks`, the
    same outputs with their secrets marked, has a part that `is_secret` anywhere inside it."""
    plain = json.loads(
        stack._run_pulumi_cmd_sync(["stack", "output", "--json", "--show-secrets"]).stdout
    )
    return {
        # An output the marks do not name is treated as secret: never shown by mistake.
        name: auto.OutputValue(
            value=value, secret=name not in marks or _inside(marks[name], is_secret)
        )
        for name, value in plain.items()
    }


def _signed(value: Any) -> bool:
    """A secret as the engine's events report it: a map holding the secret signature."""
    return isinstance(value, dict) and SECRET_SIGNATURE in value


def _inside(value: Any, is_secret: Callable[[Any], bool]) -> bool:
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(_inside(v, is_secret) for v in value.values())
    if isinstance(value, list):
        return any(_inside(v, is_secret) for v in value)
    return False
