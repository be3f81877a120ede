"""Async stack operations: each runs in an isolated worker process, one at a time per stack."""

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from responder.logs import Redactor, get_logger
from responder.stacks import processes
from responder.stacks.environment import PulumiEnvironment
from responder.stacks.errors import (
    ERRORS_BY_KIND,
    DestroyNotAllowed,
    OperationCancelled,
    OperationTimeout,
    StackError,
    WorkerCrashed,
)
from responder.stacks.protocol import GRACE_VARIABLE, PARENT_VARIABLE, ConfigValue, Request, Step
from responder.stacks.results import StepResult

log = get_logger("responder.stacks")

DEFAULT_PROJECT = "burner"
DEFAULT_PROGRAM = "burner_program:pulumi_program"


class Secret(str):
    """A config value to store encrypted; its repr never shows the value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('[secret]')"


@dataclass(frozen=True)
class StackTarget:
    """Which stack, of which project, running which program."""

    name: str
    project: str = DEFAULT_PROJECT
    program: str = DEFAULT_PROGRAM

    @property
    def key(self) -> str:
        return f"{self.project}/{self.name}"


class StackOperations:
    """The Automation API steps for many stacks, usable from asyncio.

    Operations on one stack are serialized here (FIFO), never left to fail on Pulumi's lock.
    """

    def __init__(
        self,
        env: PulumiEnvironment,
        *,
        timeout: float = 600.0,
        kill_grace: float = 15.0,
        redactor: Redactor | None = None,
        warm_workers: int = 1,
    ) -> None:
        self.env = env
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.redactor = redactor
        self.pulumi_version = ""
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cancels: dict[str, asyncio.Event] = {}  # per running stack operation
        self._projects: set[str] = set()
        self._workers = _WorkerPool(
            {**self._worker_env(), GRACE_VARIABLE: str(kill_grace)}, warm_workers
        )
        if redactor:
            redactor.add(env.passphrase())

    async def start(self) -> None:
        """Check the CLI once (the SDK would run `pulumi version` per workspace) and warm a worker."""
        proc = await asyncio.create_subprocess_exec(
            str(self.env.pulumi_command),
            "version",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._worker_env(),
        )
        out, err = await proc.communicate()
        version = out.decode().strip()
        if proc.returncode != 0 or not version:
            raise StackError(f"`{self.env.pulumi_command} version` failed: {err.decode()[-500:]}")
        self.pulumi_version = version
        self._workers.fill()

    async def close(self) -> None:
        await self._workers.close()

    def stack(
        self, name: str, *, project: str = DEFAULT_PROJECT, program: str = DEFAULT_PROGRAM
    ) -> "Stack":
        return Stack(self, StackTarget(name, project, program))

    @contextlib.asynccontextmanager
    async def locked(self, target: StackTarget) -> AsyncIterator[None]:
        """Hold the stack for a sequence of operations (other callers queue behind, in order)."""
        lock = self._locks.get(target.key)
        if lock is None:
            lock = self._locks[target.key] = asyncio.Lock()
        async with lock:
            yield

    def is_locked(self, target: StackTarget) -> bool:
        lock = self._locks.get(target.key)
        return bool(lock and lock.locked())

    async def run(
        self,
        target: StackTarget,
        steps: list[Step],
        *,
        timeout: float | None = None,
        hold: bool = False,
        tags: dict[str, str] | None = None,
        exists: bool = False,
        done: list[StepResult] | None = None,
    ) -> list[StepResult]:
        """Run steps in one worker. `hold=True` means the caller already holds `locked(target)`.

        `tags` are set on the stack if one of the steps creates it; `exists=True` says the caller
        knows the stack exists, which saves the worker a `pulumi stack select`. Each step's result
        is appended to `done` as it completes: the caller keeps those of a request that fails later.
        """
        hints: dict[str, Any] = {"tags": tags} if tags else {}
        if exists:
            hints["exists"] = True
        if hold:
            return await self._run_unlocked(target, steps, timeout or self.timeout, hints, done)
        async with self.locked(target):
            return await self._run_unlocked(target, steps, timeout or self.timeout, hints, done)

    async def list_stacks(self, project: str, program: str = DEFAULT_PROGRAM) -> list[str]:
        """Every stack of the project in the backend (read-only: takes no stack lock)."""
        result = await self._run_unlocked(
            StackTarget("", project, program), [{"op": "list_stacks"}], self.timeout
        )
        return list(result[-1].details["stacks"])

    async def cancel(self, target: StackTarget) -> bool:
        """Stop the running operation on this stack: one SIGTERM, which the worker passes to the CLI
        as a graceful cancel; after `kill_grace`, every process of the operation is killed. An
        operation still waiting for its worker is never started."""
        cancel = self._cancels.get(target.key)
        if cancel is None or cancel.is_set():
            return False
        cancel.set()
        return True

    async def _run_unlocked(
        self,
        target: StackTarget,
        steps: list[Step],
        timeout: float,
        hints: dict[str, Any] | None = None,
        done: list[StepResult] | None = None,
    ) -> list[StepResult]:
        repairing = steps == [{"op": "repair"}]
        self._ensure_project(target.project)
        for step in steps:
            if step["op"] == "set_config" and self.redactor:
                self.redactor.add(*(v["value"] for v in step["config"].values() if v["secret"]))
        request: Request = {
            "project": target.project,
            "stack": target.name,
            "program": target.program,
            "work_dir": str(self.env.workspace_dir(target.project)),
            "pulumi_command": str(self.env.pulumi_command),
            "pulumi_version": self.pulumi_version,
            "steps": steps,
        }
        request.update(hints or {})  # type: ignore[typeddict-item]
        cancel = asyncio.Event()
        if target.name:  # read-only listings (no stack name) need neither cancel nor recovery
            # Registered before the worker is acquired, not after: a cancel in between is kept,
            # and the request is then never sent.
            self._cancels[target.key] = cancel
        try:
            worker = await self._workers.acquire()
            if cancel.is_set():
                self._workers.give_back(worker)
                raise OperationCancelled(
                    "operation cancelled before it started", stack=target.name, step=steps[0]["op"]
                )
            try:
                return await self._in_worker(
                    target, worker, request, timeout, cancel, [] if done is None else done
                )
            except (OperationTimeout, OperationCancelled):
                if not repairing:
                    await self._repair(target)
                raise
            except asyncio.CancelledError:
                if not repairing:
                    await asyncio.shield(self._repair(target))
                raise
        finally:
            if self._cancels.get(target.key) is cancel:
                del self._cancels[target.key]

    async def _in_worker(
        self,
        target: StackTarget,
        worker: "_Worker",
        request: Request,
        timeout: float,
        cancel: asyncio.Event,
        done: list[StepResult],
    ) -> list[StepResult]:
        """Run the request in the worker; when this returns or raises, no process of it is alive."""
        record = None
        if target.name:
            record = self._worker_record(target)
            record.write_text(worker.marker)
        session = _WorkerSession(worker.proc, target, self.redactor, done)
        reader = asyncio.create_task(session.communicate(request))
        cancelled = asyncio.create_task(cancel.wait())
        try:
            finished, _ = await asyncio.wait(
                {reader, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
            await asyncio.shield(self._end(worker, reader))
            if record:
                record.unlink(missing_ok=True)
        if reader in finished:
            results = reader.result()
            if session.error:
                raise session.error
            return results
        if cancel.is_set():
            if isinstance(session.error, OperationCancelled):
                raise session.error
            raise OperationCancelled(
                "operation cancelled", stack=target.name, step=session.current_step
            )
        raise OperationTimeout(
            f"operation exceeded its {timeout:g}s timeout",
            stack=target.name,
            step=session.current_step,
        )

    async def _end(self, worker: "_Worker", reader: "asyncio.Task[Any]") -> None:
        """End every process of the worker's operation, in whatever state it is.

        A worker still running gets one SIGTERM (passed to the CLI as a graceful cancel) and
        `kill_grace` seconds; then every process carrying its marker is killed, whatever its process
        group or parent. One that has exited leaves nothing normally; anything it left anyway gets
        SIGTERM, then SIGKILL after the grace.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.kill_grace
        if worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), self.kill_grace)
            if worker.proc.returncode is None:
                log.warning(
                    "stack.worker_killed", pid=worker.proc.pid, grace_seconds=self.kill_grace
                )
        await processes.end_marked(worker.marker, max(0.0, deadline - loop.time()))
        await worker.proc.wait()
        with contextlib.suppress(Exception):  # its error, if any, is the session's to report
            await reader

    async def recover(self, target: StackTarget) -> None:
        """After a daemon crash: end every process left of the stack's last operation (worker, CLI,
        plugins), then repair and refresh the stack.

        The stale lock is cleared only once none of those processes is alive.
        """
        async with self.locked(target):
            record = self._worker_record(target)
            with contextlib.suppress(FileNotFoundError):
                marker = record.read_text()
                for pid in processes.marked(marker):
                    log.warning("stack.leftover_process", stack=target.name, pid=pid)
                await processes.end_marked(marker, self.kill_grace)
            record.unlink(missing_ok=True)
            await self._repair(target)
            try:
                await self._run_unlocked(target, [{"op": "refresh"}], self.timeout)
            except StackError as e:
                log.warning("stack.recover_refresh_failed", stack=target.name, error=str(e))

    def _ensure_project(self, project: str) -> None:
        """Write the workspace's Pulumi.yaml once, atomically. Workers must not write it: concurrent
        rewrites of one file let a CLI read it half-written."""
        if project in self._projects:
            return
        work_dir = self.env.workspace_dir(project)
        work_dir.mkdir(parents=True, exist_ok=True)
        tmp = work_dir / f".Pulumi.yaml.{os.getpid()}"
        # main: the program's directory, where dynamic providers start; like the SDK's default, our
        # working directory, so modules importable here are importable there.
        tmp.write_text(f"name: {project}\nruntime: python\nmain: {json.dumps(os.getcwd())}\n")
        os.replace(tmp, work_dir / "Pulumi.yaml")
        self._projects.add(project)

    def _worker_record(self, target: StackTarget) -> Path:
        """Where the marker of the stack's running worker is kept, for recovery after a crash."""
        run_dir = self.env.data_dir / "run"
        run_dir.mkdir(exist_ok=True)
        return run_dir / f"{target.project}--{target.name}.worker"

    async def _repair(self, target: StackTarget) -> None:
        """Clear the lock and pending operations left by a stopped CLI (none is alive now)."""
        try:
            await self._run_unlocked(target, [{"op": "repair"}], self.timeout)
        except StackError as e:
            log.error("stack.repair_failed", stack=target.name, error=str(e))

    def _worker_env(self) -> dict[str, str]:
        return {**os.environ, **self.env.variables(), "PYTHONUNBUFFERED": "1"}


class Stack:
    """A handle to one stack: the Automation API steps as awaitable methods."""

    def __init__(self, ops: StackOperations, target: StackTarget) -> None:
        self.ops = ops
        self.target = target

    @property
    def name(self) -> str:
        return self.target.name

    async def _one(self, step: Step, **kw: Any) -> StepResult:
        return (await self.ops.run(self.target, [step], **kw))[-1]

    async def create_or_select(self) -> StepResult:
        return await self._one({"op": "select", "create": True})

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        """Set all keys in one call; wrap a value in `Secret` to store it encrypted."""
        return await self._one(
            {"op": "set_config", "create": True, "config": config_values(config)}
        )

    async def set_tags(self, tags: Mapping[str, str]) -> StepResult:
        return await self._one({"op": "set_tags", "tags": dict(tags)})

    async def up(self, **kw: Any) -> StepResult:
        return await self._one({"op": "up", "create": True}, **kw)

    async def refresh(self, **kw: Any) -> StepResult:
        return await self._one({"op": "refresh"}, **kw)

    async def preview(self, **kw: Any) -> StepResult:
        return await self._one({"op": "preview", "create": True}, **kw)

    async def preview_destroy(self, **kw: Any) -> StepResult:
        return await self._one({"op": "preview_destroy"}, **kw)

    async def outputs(self) -> StepResult:
        return await self._one({"op": "outputs"})

    async def export(self, path: str) -> StepResult:
        return await self._one({"op": "export", "path": path})

    async def destroy(self, *, allow: bool = False, remove: bool = False, **kw: Any) -> StepResult:
        """Destroy every resource; refused unless `allow=True`, like the tutorial's destroy flag."""
        if not allow:
            raise DestroyNotAllowed(
                "destroy refused: pass allow=True to destroy this stack",
                stack=self.name,
                step="destroy",
            )
        return await self._one({"op": "destroy", "remove": remove}, **kw)

    async def cancel(self) -> bool:
        return await self.ops.cancel(self.target)


# Secret config shorter than this is refused: the log redactor ignores short strings (they would
# mask ordinary words), so a shorter secret would appear in logs and errors unmasked.
SECRET_MIN_LENGTH = 8


def config_values(config: Mapping[str, object]) -> dict[str, ConfigValue]:
    """The config as the worker takes it. A `Secret` shorter than SECRET_MIN_LENGTH is a ValueError
    that names its key (never its value)."""
    for key, value in config.items():
        if isinstance(value, Secret) and len(value) < SECRET_MIN_LENGTH:
            raise ValueError(
                f"secret config {key!r} is shorter than {SECRET_MIN_LENGTH} characters: "
                "too short to be masked in logs"
            )
    return {
        key: {
            "value": value if isinstance(value, str) else json.dumps(value),
            "secret": isinstance(value, Secret),
        }
        for key, value in config.items()
    }


class _WorkerSession:
    """Talks to one worker: sends the request, logs its events and steps, collects results."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        target: StackTarget,
        redactor: Redactor | None,
        results: list[StepResult],
    ) -> None:
        self.proc = proc
        self.target = target
        self.redactor = redactor
        self.results = results  # appended to as each step completes
        self.error: StackError | None = None
        self.current_step = ""
        self.stderr_tail: deque[str] = deque(maxlen=40)

    async def communicate(self, request: Request) -> list[StepResult]:
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        self.proc.stdin.close()
        stderr = asyncio.create_task(self._drain_stderr())
        steps = iter(request["steps"])
        self.current_step = next(steps)["op"]
        started = time.monotonic()
        async for raw in self.proc.stdout:
            message = json.loads(raw)
            kind = message["kind"]
            if kind == "event":
                log.info(
                    "pulumi.engine",
                    stack=self.target.name,
                    step=message["step"],
                    **message["event"],
                )
                continue
            duration = time.monotonic() - started
            if kind == "done":
                result = StepResult.from_message(
                    message["step"], self.target.name, duration, message["result"]
                )
                self._register_secrets(result)
                self.results.append(result)
                log.info(
                    "stack.step",
                    stack=self.target.name,
                    step=result.step,
                    outcome="succeeded",
                    duration_ms=round(duration * 1000, 1),
                    changes=result.changes,
                    outputs=result.masked_outputs() or None,
                )
                self.current_step = next((s["op"] for s in steps), self.current_step)
                started = time.monotonic()
            elif kind == "error":
                error_cls = ERRORS_BY_KIND.get(message["error"], StackError)
                self.error = error_cls(
                    message["message"], stack=self.target.name, step=message["step"]
                )
                log.warning(
                    "stack.step",
                    stack=self.target.name,
                    step=message["step"],
                    outcome="failed",
                    duration_ms=round(duration * 1000, 1),
                    error_kind=error_cls.kind,
                    error=message["message"],
                )
        await self.proc.wait()
        await stderr
        if self.error is None and len(self.results) < len(request["steps"]):
            tail = "\n".join(self.stderr_tail)[-1500:]
            self.error = WorkerCrashed(
                f"worker exited with code {self.proc.returncode} before finishing: {tail}",
                stack=self.target.name,
                step=self.current_step,
            )
            log.error(
                "stack.step",
                stack=self.target.name,
                step=self.current_step,
                outcome="crashed",
                exit_code=self.proc.returncode,
                error=self.error.message,
            )
        return self.results

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr
        async for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode(errors="replace").rstrip())

    def _register_secrets(self, result: StepResult) -> None:
        if self.redactor:
            self.redactor.add(*(str(o.value) for o in result.outputs.values() if o.secret))


@dataclass(frozen=True)
class _Worker:
    """A worker process and the marker every process it starts inherits (see processes.py)."""

    proc: asyncio.subprocess.Process
    marker: str


class _WorkerPool:
    """Keeps warm worker processes (Python started, pulumi imported) waiting for a request.

    Each worker still runs exactly one request, so isolation is unchanged; only start-up is paid early.
    """

    def __init__(self, env: dict[str, str], spares: int) -> None:
        self._env = env
        self._spares_wanted = spares
        self._spares: deque[asyncio.Future[_Worker]] = deque()

    def fill(self) -> None:
        while len(self._spares) < self._spares_wanted:
            self._spares.append(asyncio.ensure_future(self._spawn()))

    async def acquire(self) -> _Worker:
        while self._spares:
            worker = await self._spares.popleft()
            self.fill()
            if worker.proc.returncode is None:
                return worker
        return await self._spawn()

    def give_back(self, worker: _Worker) -> None:
        """A worker that was never sent a request (its operation was cancelled first) waits for the
        next operation instead of being ended."""
        spare = asyncio.get_running_loop().create_future()
        spare.set_result(worker)
        self._spares.appendleft(spare)

    async def _spawn(self) -> _Worker:
        marker = uuid.uuid4().hex
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "responder.stacks.worker",
            "--warm",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                **self._env,
                processes.MARKER_VARIABLE: marker,
                PARENT_VARIABLE: str(os.getpid()),
            },
            start_new_session=True,  # a Ctrl-C at the daemon's terminal is the daemon's to handle
            limit=2**22,
        )
        return _Worker(proc, marker)

    async def close(self) -> None:
        while self._spares:
            worker = await self._spares.popleft()
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.communicate()
