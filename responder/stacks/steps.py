"""What each step of a request does with the Pulumi Automation API, inside the worker process."""

import functools
import importlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pulumi import automation as auto
from pulumi.automation import events

from responder.project_program import is_module_function, read_project, run_program
from responder.stacks import sdk
from responder.stacks.config_file import write_plain_config
from responder.stacks.errors import ErrorKind
from responder.stacks.protocol import Message, Request, Step
from responder.stacks.tags_file import write_tags

Program = Callable[[], None]
Result = dict[str, object]  # a step's JSON result (see StepResult.from_message)


class Sink(Protocol):
    """Where the worker's protocol lines go."""

    def send(self, message: Message) -> None: ...
    def event(self, step: str, event: events.EngineEvent) -> None: ...


def run(request: Request, sink: Sink, cancelled: threading.Event) -> int:
    """Run the request's steps in order; the first failure (or a cancel) ends it. The exit code."""
    program = sdk.ProgramOutputs(load_program(request["program"]))
    workspace_dir = Path(request["work_dir"])
    workspace_dir.mkdir(parents=True, exist_ok=True)
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(workspace_dir),
        pulumi_home=os.environ.get("PULUMI_HOME"),
        secrets_provider="passphrase",
        project_settings=None,  # Pulumi.yaml is written once by the daemon (see PulumiOperations)
        pulumi_command=sdk.known_command(request["pulumi_command"], request["pulumi_version"]),
    )
    tagging = Tagging(request.get("tags") or {}, request["project"])
    code = _run_steps(request, program, opts, sink, cancelled, tagging)
    failure = tagging.wait()
    if (
        failure is not None and code == 0
    ):  # the tags' failure is the request's, once its steps ended
        kind, message = classify(failure)
        sink.send({"kind": "error", "step": "tag", "error": kind, "message": message})
        return 1
    return code


def _run_steps(
    request: Request,
    program: sdk.ProgramOutputs,
    opts: auto.LocalWorkspaceOptions,
    sink: Sink,
    cancelled: threading.Event,
    tagging: "Tagging",
) -> int:
    stack: auto.Stack | None = None
    for step in request["steps"]:
        op = step["op"]
        if cancelled.is_set():  # a step that finished despite the cancel must not start another
            message = "cancelled before this step started"
            sink.send(
                {"kind": "error", "step": op, "error": ErrorKind.CANCELLED, "message": message}
            )
            return 1
        try:
            if op == "list_stacks":
                result = _list_stacks(program, opts)
            else:
                if stack is None:
                    create = step.get("create", False)
                    stack, created = _open_stack(request, program, opts, create=create)
                    if created:
                        tagging.stack = stack
                if op != "set_config":  # writes the file a tag command reads: not at the same time
                    tagging.start()
                result = _run_step(stack, step, functools.partial(sink.event, op), program)
        except Exception as e:
            kind, message = classify(e)
            if cancelled.is_set():
                kind = ErrorKind.CANCELLED
            sink.send({"kind": "error", "step": op, "error": kind, "message": message})
            return 1
        sink.send({"kind": "done", "step": op, "result": result})
    return 0


def _workspace(program: Program, opts: auto.LocalWorkspaceOptions) -> auto.LocalWorkspace:
    return auto.LocalWorkspace(
        work_dir=opts.work_dir,
        pulumi_home=opts.pulumi_home,
        program=program,
        secrets_provider=opts.secrets_provider,
        project_settings=opts.project_settings,
        pulumi_command=opts.pulumi_command,
    )


class Tagging:
    """Sets a new stack's ownership tags (which incident, playbook and delivery made it, and when)
    before the request's operation starts. On a local file backend they are written at once, all
    in one file (see tags_file). Elsewhere they are set in a thread while the operation runs: the
    CLI sets one tag per process, and tags live beside the state, not in it, so they need not wait
    for the stack's first `up`, nor it for them. A tag the CLI refused meanwhile is set again once
    the operation has ended, with nothing beside it: only that second refusal fails the request."""

    def __init__(self, tags: dict[str, str], project: str = "") -> None:
        self.tags = tags
        self.project = project
        self.stack: auto.Stack | None = None  # set when the request created its stack
        self.unset = dict(tags)  # the tags not set yet
        self.error: Exception | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.stack is not None and self.unset and self._thread is None:
            backend = os.environ.get("PULUMI_BACKEND_URL", "")
            try:
                written = bool(self.project) and write_tags(
                    backend, self.project, self.stack.name, self.unset
                )
            except OSError:
                written = False  # the CLI tries next, and reports its own failure
            if written:
                self.unset.clear()
                return
            self._thread = threading.Thread(target=self._set, args=(self.stack,), name="tags")
            self._thread.start()

    def _set(self, stack: auto.Stack) -> None:
        try:
            for key, value in list(self.unset.items()):
                stack.set_tag(key, value)
                del self.unset[key]
        except Exception as e:  # tried again, or reported, once the request's steps have ended
            self.error = e

    def wait(self) -> Exception | None:
        """Start them if no step did (a request that only sets config), wait for them, and set
        again those refused beside the operation."""
        self.start()
        if self._thread is None:
            return None
        self._thread.join()
        if self.error is not None and self.stack is not None:
            self.error = None
            self._set(self.stack)
        return self.error


def _open_stack(
    request: Request, program: Program, opts: auto.LocalWorkspaceOptions, *, create: bool
) -> tuple[auto.Stack, bool]:
    """The request's stack, and whether this created it."""
    if request.get("exists"):
        return sdk.known_stack(request["stack"], _workspace(program, opts)), False
    name, project = request["stack"], request["project"]

    def select() -> tuple[auto.Stack, bool]:
        stack = auto.select_stack(stack_name=name, project_name=project, program=program, opts=opts)
        return stack, False

    def created() -> tuple[auto.Stack, bool]:
        stack = auto.create_stack(stack_name=name, project_name=project, program=program, opts=opts)
        return stack, True

    if create and request.get("tags"):
        # The daemon expects a new stack (it sends tags only then): init first, select only if it
        # exists after all. A failing `stack select` would be one CLI process spent on nothing.
        try:
            return created()
        except auto.errors.StackAlreadyExistsError:
            return select()
    try:
        return select()
    except auto.errors.StackNotFoundError:
        if not create:
            raise
    return created()


def _list_stacks(program: Program, opts: auto.LocalWorkspaceOptions) -> Result:
    return {"stacks": [s.name for s in _workspace(program, opts).list_stacks()]}


def _run_step(
    stack: auto.Stack, step: Step, on_event: sdk.OnEvent, program: sdk.ProgramOutputs
) -> Result:
    op = step["op"]
    if op == "set_config":
        config = step["config"]
        plain = {k: v["value"] for k, v in config.items() if not v["secret"]}
        if plain and not _write_plain_config(stack, plain):
            stack.set_all_config({k: auto.ConfigValue(v) for k, v in plain.items()})
        for key, entry in config.items():
            if entry["secret"]:
                sdk.set_secret_config(stack, key, entry["value"])
        return {"keys": sorted(config)}
    if op == "up":
        with sdk.results_from_events(stack, on_event, program) as events_seen:
            up = stack.up(on_event=events_seen, show_secrets=False)
        return {"outputs": _outputs(up.outputs), "changes": up.summary.resource_changes or {}}
    if op in ("preview", "preview_destroy"):
        return _preview(stack, op == "preview_destroy", on_event)
    if op == "refresh":
        # run_program: the program re-registers its outputs, so stack outputs show the refreshed state.
        # Its outputs are read back (the program's registered ones need not be what refresh stored).
        with sdk.results_from_events(stack, on_event) as events_seen:
            refresh = stack.refresh(on_event=events_seen, show_secrets=False, run_program=True)
            outputs = stack.outputs()
        return {"changes": refresh.summary.resource_changes or {}, "outputs": _outputs(outputs)}
    if op == "destroy":
        remove = step.get("remove", False)
        with sdk.results_from_events(stack, on_event) as events_seen:
            destroy = stack.destroy(on_event=events_seen, show_secrets=False, remove=remove)
        return {"changes": destroy.summary.resource_changes or {}, "removed": remove}
    if op == "outputs":
        return {"outputs": _outputs(sdk.read_outputs(stack))}
    if op == "export":
        # Secrets stay encrypted: the CLI exports ciphertext unless --show-secrets is passed.
        path = Path(step["path"])
        sdk.export_state(stack, path)
        return {"path": str(path), "bytes": path.stat().st_size}
    if op == "repair":
        return _repair(stack)
    raise ValueError(f"unknown step {op!r}")


def _write_plain_config(stack: auto.Stack, values: dict[str, str]) -> bool:
    workspace = stack.workspace
    assert isinstance(workspace, auto.LocalWorkspace)
    project = workspace.project_settings().name
    return write_plain_config(Path(workspace.work_dir), project, stack.name, values)


def _preview(stack: auto.Stack, destroying: bool, on_event: sdk.OnEvent) -> Result:
    """The change summary and, sorted, each resource step that is not a no-op."""
    planned: list[dict[str, str]] = []

    def collect(event: events.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None and pre.metadata is not None:
            kind = pre.metadata.op.value
            if kind not in ("same", "read"):
                planned.append({"urn": pre.metadata.urn, "op": kind})
        on_event(event)

    preview = (stack.preview_destroy if destroying else stack.preview)(on_event=collect)
    return {
        "changes": preview.change_summary or {},
        "plan": sorted(planned, key=lambda p: (p["urn"], p["op"])),
    }


def _repair(stack: auto.Stack) -> Result:
    """Clear what a killed CLI left behind: its lock, then pending operations in the state.

    Only called when the daemon knows no CLI for this stack is alive. The state goes through a file
    of the workspace, its secrets still encrypted: the SDK's `export_stack` decrypts them
    (`--show-secrets`) and its `import_stack` writes that to the system's temp dir, where a failed
    import leaves it.
    """
    stack.cancel()  # on a file backend this only deletes the stack's lock files
    fd, name = tempfile.mkstemp(dir=stack.workspace.work_dir, prefix=".repair-", suffix=".json")
    os.close(fd)  # made 0600; the CLI writes it
    state_file = Path(name)
    try:
        sdk.export_state(stack, state_file)
        state = json.loads(state_file.read_text())
        deployment = state.get("deployment") or {}
        pending = deployment.get("pending_operations") or []
        if pending:
            deployment["pending_operations"] = []
            state_file.write_text(json.dumps(state))
            sdk.import_state(stack, state_file)
    finally:
        state_file.unlink(missing_ok=True)
    return {"unlocked": True, "cleared_pending_operations": len(pending)}


def _outputs(outputs: auto.OutputMap) -> Result:
    return {name: {"value": out.value, "secret": out.secret} for name, out in outputs.items()}


def classify(e: Exception) -> tuple[ErrorKind, str]:
    """Which of our errors an SDK or program exception is, and the message to report."""
    errors = auto.errors
    if isinstance(e, errors.StackNotFoundError):
        return ErrorKind.STACK_NOT_FOUND, "stack not found"
    if isinstance(e, errors.StackAlreadyExistsError):
        return ErrorKind.STACK_ALREADY_EXISTS, "stack already exists"
    if isinstance(e, errors.ConcurrentUpdateError):
        return ErrorKind.STACK_LOCKED, "the stack is locked by another update"
    if isinstance(
        e, errors.InlineSourceRuntimeError | errors.RuntimeError | errors.CompilationError
    ):
        return ErrorKind.PROGRAM_ERROR, _summarize(e)
    if isinstance(e, errors.CommandError):
        return ErrorKind.CLI_ERROR, _summarize(e)
    if isinstance(e, ImportError | AttributeError | ValueError):
        return ErrorKind.PROGRAM_ERROR, f"{type(e).__name__}: {e}"
    return ErrorKind.STACK_ERROR, f"{type(e).__name__}: {e}"


def _summarize(e: Exception) -> str:
    """The CLI's own error lines, not its whole output."""
    text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() and not ln.startswith("code:")]
    chosen = errors[-6:] if errors else lines[-6:]
    return "\n".join(chosen)[:2000]


def load_program(spec: str) -> Program:
    """The program named `module:function` (the function defaults to `pulumi_program`), or the
    Pulumi project folder at the absolute path `spec`, run as `pulumi up` in it would run it."""
    if not is_module_function(spec) and Path(spec).is_absolute():
        project = read_project(Path(spec))
        return functools.partial(run_program, project.main)
    module_name, _, attr = spec.partition(":")
    program = getattr(importlib.import_module(module_name), attr or "pulumi_program")
    if not callable(program):
        raise TypeError(f"program {spec!r} is not callable")
    return program  # type: ignore[no-any-return]
