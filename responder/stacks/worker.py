"""A stack worker: runs one request's Pulumi steps in its own process, isolated from the daemon.

Started as `python -m responder.stacks.worker`. Isolation means a timeout or cancellation can stop it,
a crash cannot take the daemon down, and concurrent programs never share Pulumi's process-global state.
SIGTERM is forwarded once to the running `pulumi` CLI, which then cancels gracefully; whatever is still
running below the worker after the grace period is killed. The daemon's death counts as a SIGTERM.
No process the worker starts outlives it: it is a child subreaper (orphaned plugins re-parent to it)
and ends everything below it before it exits.
"""

import contextlib
import functools
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from responder.stacks import processes
from responder.stacks.protocol import GRACE_VARIABLE, PARENT_VARIABLE, Message, Request, Step

_cancelled = threading.Event()
_writing = threading.Lock()  # protocol lines go out whole, even across a forced exit


def main() -> int:
    processes.become_subreaper()
    signal.signal(signal.SIGTERM, _on_sigterm)
    processes.signal_on_parent_death(signal.SIGTERM)
    if os.getppid() != int(os.environ[PARENT_VARIABLE]):
        return 0  # the daemon died before the line above: nothing to run for
    protocol = _take_stdout()
    if "--warm" in sys.argv:
        warm_up()
    line = sys.stdin.readline()
    if not line:
        return 0  # the daemon went away without sending a request
    request: Request = json.loads(line)
    try:
        return run(request, _Sink(protocol))
    finally:
        processes.end_descendants(_grace())


def warm_up() -> None:
    """Import the heavy modules before a request arrives (the daemon keeps a warm spare)."""
    import pulumi.automation  # noqa: F401


def run(request: Request, sink: "_Sink") -> int:
    from pulumi import automation as auto

    program = _load_program(request["program"])
    workspace_dir = Path(request["work_dir"])
    workspace_dir.mkdir(parents=True, exist_ok=True)
    command = _known_command(request["pulumi_command"], request["pulumi_version"])
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(workspace_dir),
        pulumi_home=os.environ.get("PULUMI_HOME"),
        secrets_provider="passphrase",
        project_settings=None,  # Pulumi.yaml is written once by the daemon (see StackOperations)
        pulumi_command=command,
    )
    stack: Any = None
    for step in request["steps"]:
        op = step["op"]
        if _cancelled.is_set():  # a step that finished despite the cancel must not start another
            message = "cancelled before this step started"
            sink.send({"kind": "error", "step": op, "error": "cancelled", "message": message})
            return 1
        try:
            if op == "list_stacks":
                sink.send(
                    {
                        "kind": "done",
                        "step": op,
                        "result": _list_stacks(auto, request, program, opts),
                    }
                )
                continue
            if stack is None:
                stack = _open_stack(auto, request, program, opts, create=step.get("create", False))
            result = _run_step(auto, stack, step, functools.partial(sink.event, op))
        except Exception as e:
            kind, message = _classify(auto, e)
            if _cancelled.is_set():
                kind = "cancelled"
            sink.send({"kind": "error", "step": op, "error": kind, "message": message})
            return 1
        sink.send({"kind": "done", "step": op, "result": result})
    return 0


def _open_stack(auto: Any, request: Request, program: Any, opts: Any, *, create: bool) -> Any:
    if request.get("exists"):
        return _known_stack(auto, request, program, opts)
    names = {
        "stack_name": request["stack"],
        "project_name": request["project"],
        "program": program,
        "opts": opts,
    }
    if create and request.get("tags"):
        # The daemon expects a new stack (it sends tags only then): init first, select only if it
        # exists after all. A failing `stack select` would be one CLI process spent on nothing.
        try:
            stack = auto.create_stack(**names)
        except auto.errors.StackAlreadyExistsError:
            return auto.select_stack(**names)
        _tag(stack, request)
        return stack
    try:
        return auto.select_stack(**names)
    except auto.errors.StackNotFoundError:
        if not create:
            raise
    stack = auto.create_stack(**names)
    _tag(stack, request)
    return stack


def _tag(stack: Any, request: Request) -> None:
    # Ownership: which incident, playbook and delivery made it, and when.
    for key, value in (request.get("tags") or {}).items():
        stack.set_tag(key, value)


def _known_stack(auto: Any, request: Request, program: Any, opts: Any) -> Any:
    """A handle on a stack the daemon knows exists, without `pulumi stack select`: every command
    names the stack with --stack anyway, so the select is one CLI process spent on nothing."""
    from pulumi.automation._stack import StackInitMode  # not exported by pulumi.automation

    workspace = auto.LocalWorkspace(
        work_dir=opts.work_dir,
        pulumi_home=opts.pulumi_home,
        program=program,
        secrets_provider=opts.secrets_provider,
        project_settings=opts.project_settings,
        pulumi_command=opts.pulumi_command,
    )
    stack = object.__new__(auto.Stack)
    stack.name, stack.workspace, stack._mode = (
        request["stack"],
        workspace,
        StackInitMode.SELECT,
    )
    return stack


def _list_stacks(auto: Any, request: Request, program: Any, opts: Any) -> dict[str, Any]:
    workspace = auto.LocalWorkspace(
        **{
            "work_dir": opts.work_dir,
            "pulumi_home": opts.pulumi_home,
            "program": program,
            "project_settings": opts.project_settings,
            "pulumi_command": opts.pulumi_command,
        }
    )
    return {"stacks": [s.name for s in workspace.list_stacks()]}


def _run_step(auto: Any, stack: Any, step: Step, on_event: Callable[[Any], None]) -> dict[str, Any]:
    op = step["op"]
    if op == "select":
        return {"stack": stack.name}
    if op == "set_config":
        config = step["config"]
        plain = {k: auto.ConfigValue(v["value"]) for k, v in config.items() if not v["secret"]}
        if plain:
            stack.set_all_config(plain)
        for key, entry in config.items():
            if entry["secret"]:
                _set_secret_config(auto, stack, key, entry["value"])
        return {"keys": sorted(config)}
    if op == "set_tags":
        for key, value in step["tags"].items():
            stack.set_tag(key, value)
        return {"tags": sorted(step["tags"])}
    if op == "up":
        with _summary_from_events(stack, on_event) as events:
            up = stack.up(on_event=events, show_secrets=False)
        return {"outputs": _outputs(up.outputs), "changes": up.summary.resource_changes or {}}
    if op in ("preview", "preview_destroy"):
        planned: list[dict[str, str]] = []

        def collect(event: Any) -> None:
            pre = getattr(event, "resource_pre_event", None)
            if pre is not None and pre.metadata is not None:
                kind = getattr(pre.metadata.op, "value", pre.metadata.op)
                if kind not in ("same", "read"):
                    planned.append({"urn": pre.metadata.urn, "op": kind})
            on_event(event)

        run = stack.preview if op == "preview" else stack.preview_destroy
        preview = run(on_event=collect)
        return {
            "changes": preview.change_summary or {},
            "plan": sorted(planned, key=lambda p: (p["urn"], p["op"])),
        }
    if op == "refresh":
        # run_program: the program re-registers its outputs, so stack outputs show the refreshed state.
        with _summary_from_events(stack, on_event) as events:
            refresh = stack.refresh(on_event=events, show_secrets=False, run_program=True)
        return {
            "changes": refresh.summary.resource_changes or {},
            "outputs": _outputs(stack.outputs()),
        }
    if op == "destroy":
        remove = step.get("remove", False)
        with _summary_from_events(stack, on_event) as events:
            destroy = stack.destroy(on_event=events, show_secrets=False, remove=remove)
        return {"changes": destroy.summary.resource_changes or {}, "removed": remove}
    if op == "outputs":
        return {"outputs": _outputs(stack.outputs())}
    if op == "export":
        # Secrets stay encrypted: the CLI exports ciphertext unless --show-secrets is passed.
        stack._run_pulumi_cmd_sync(["stack", "export", "--file", step["path"]])
        return {"path": step["path"], "bytes": Path(step["path"]).stat().st_size}
    if op == "repair":
        return _repair(auto, stack)
    raise ValueError(f"unknown step {op!r}")


def _set_secret_config(auto: Any, stack: Any, key: str, value: str) -> None:
    """`pulumi config set --secret KEY` with the value on stdin. The SDK's set_config puts the value
    in the CLI's argv, which any local user can read in /proc/<pid>/cmdline."""
    from pulumi.automation._cmd import CommandResult  # not exported by pulumi.automation

    workspace = stack.workspace
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
            CommandResult(stdout=done.stdout, stderr=done.stderr, code=done.returncode)
        )


@contextlib.contextmanager
def _summary_from_events(
    stack: Any, on_event: Callable[[Any], None]
) -> Iterator[Callable[[Any], None]]:
    """The SDK runs `pulumi stack history` after up, refresh and destroy only to build a summary; the
    engine's summary event already carries the same change counts. One CLI process fewer each time."""
    changes: dict[str, int] = {}

    def capture(event: Any) -> None:
        summary = getattr(event, "summary_event", None)
        if summary is not None:
            changes.update(summary.resource_changes or {})
        on_event(event)

    stack.info = lambda *_args, **_kwargs: types.SimpleNamespace(resource_changes=changes)
    try:
        yield capture
    finally:
        del stack.info


def _repair(auto: Any, stack: Any) -> dict[str, Any]:
    """Clear what a killed CLI left behind: its lock, then pending operations in the state.

    Only called when the daemon knows no CLI for this stack is alive.
    """
    stack.cancel()  # on a file backend this only deletes the stack's lock files
    state = stack.export_stack()
    pending = (state.deployment or {}).get("pending_operations") or []
    if pending:
        state.deployment["pending_operations"] = []
        stack.import_stack(state)
    return {"unlocked": True, "cleared_pending_operations": len(pending)}


def _outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    return {name: {"value": out.value, "secret": out.secret} for name, out in outputs.items()}


def _classify(auto: Any, e: Exception) -> tuple[str, str]:
    errors = auto.errors
    if isinstance(e, errors.StackNotFoundError):
        return "stack_not_found", "stack not found"
    if isinstance(e, errors.StackAlreadyExistsError):
        return "stack_already_exists", "stack already exists"
    if isinstance(e, errors.ConcurrentUpdateError):
        return "stack_locked", "the stack is locked by another update"
    if isinstance(
        e, errors.InlineSourceRuntimeError | errors.RuntimeError | errors.CompilationError
    ):
        return "program_error", _summarize(e)
    if isinstance(e, errors.CommandError):
        return "cli_error", _summarize(e)
    if isinstance(e, ImportError | AttributeError | ValueError):
        return "program_error", f"{type(e).__name__}: {e}"
    return "stack_error", f"{type(e).__name__}: {e}"


def _summarize(e: Exception) -> str:
    """The CLI's own error lines, not its whole output."""
    text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() and not ln.startswith("code:")]
    chosen = errors[-6:] if errors else lines[-6:]
    return "\n".join(chosen)[:2000]


def _load_program(spec: str) -> Callable[[], None]:
    module_name, _, attr = spec.partition(":")
    program = getattr(importlib.import_module(module_name), attr or "pulumi_program")
    if not callable(program):
        raise TypeError(f"program {spec!r} is not callable")
    return program  # type: ignore[no-any-return]


def _known_command(command: str, version: str) -> Any:
    """A PulumiCommand that trusts the daemon's version check instead of spawning `pulumi version`."""
    from pulumi.automation import PulumiCommand
    from semver import VersionInfo

    cmd = PulumiCommand.__new__(PulumiCommand)
    cmd.command = command
    cmd.version = VersionInfo.parse(version.lstrip("v"))
    return cmd


def _summarize_event(event: Any) -> dict[str, Any] | None:
    """Keep what the logs need from an engine event; drop stdout chatter."""
    for name in ("resource_pre_event", "res_outputs_event"):
        e = getattr(event, name, None)
        if e is not None and e.metadata is not None:
            m = e.metadata
            status = "started" if name == "resource_pre_event" else "done"
            op = getattr(m.op, "value", m.op)
            return {"type": name, "urn": m.urn, "op": op, "resource_type": m.type, "status": status}
    failed = getattr(event, "res_op_failed_event", None)
    if failed is not None:
        m = failed.metadata
        return {
            "type": "res_op_failed_event",
            "urn": m.urn,
            "op": getattr(m.op, "value", m.op),
            "status": "failed",
        }
    diag = getattr(event, "diagnostic_event", None)
    if diag is not None and diag.severity in ("warning", "error"):
        return {
            "type": "diagnostic_event",
            "severity": diag.severity,
            "urn": diag.urn,
            "message": diag.message.strip()[:1000],
        }
    summary = getattr(event, "summary_event", None)
    if summary is not None:
        return {
            "type": "summary_event",
            "resource_changes": summary.resource_changes,
            "duration_seconds": summary.duration_seconds,
        }
    return None


class _Sink:
    """Writes protocol lines; engine events arrive on SDK threads, so writes are serialized."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def send(self, message: Message) -> None:
        line = json.dumps(message, default=str)
        with _writing:
            self._stream.write(line + "\n")
            self._stream.flush()

    def event(self, step: str, event: Any) -> None:
        summary = _summarize_event(event)
        if summary is not None:
            self.send({"kind": "event", "step": step, "event": summary})


def _take_stdout() -> TextIO:
    """Keep the real stdout for the protocol; anything the program prints goes to stderr instead."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """Pass the first SIGTERM to the CLI (a graceful cancel); end everything left after the grace."""
    if _cancelled.is_set():
        return
    _cancelled.set()
    me = os.getpid()
    processes.signal_all(lambda: processes.children(me), signal.SIGTERM)
    timer = threading.Timer(_grace(), _end_now)
    timer.daemon = True
    timer.start()


def _end_now() -> None:
    """The grace is over (the daemon may be gone and cannot escalate): kill everything below, exit."""
    processes.end_descendants(0)
    with _writing:
        os._exit(1)


def _grace() -> float:
    return float(os.environ[GRACE_VARIABLE])


if __name__ == "__main__":
    sys.exit(main())
