"""Async stack operations: each runs in an isolated worker process, one at a time per stack."""

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from responder.logs import Redactor, get_logger
from responder.stacks.environment import PulumiEnvironment
from responder.stacks.errors import (
    ERRORS_BY_KIND,
    DestroyNotAllowed,
    OperationCancelled,
    OperationTimeout,
    StackError,
    WorkerCrashed,
)
from responder.stacks.protocol import ConfigValue, Request, Step
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
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._projects: set[str] = set()
        self._workers = _WorkerPool(self._worker_env(), warm_workers)
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
    ) -> list[StepResult]:
        """Run steps in one worker. `hold=True` means the caller already holds `locked(target)`.

        `tags` are set on the stack if one of the steps creates it; `exists=True` says the caller
        knows the stack exists, which saves the worker a `pulumi stack select`.
        """
        hints: dict[str, Any] = {"tags": tags} if tags else {}
        if exists:
            hints["exists"] = True
        if hold:
            return await self._run_unlocked(target, steps, timeout or self.timeout, hints)
        async with self.locked(target):
            return await self._run_unlocked(target, steps, timeout or self.timeout, hints)

    async def list_stacks(self, project: str, program: str = DEFAULT_PROGRAM) -> list[str]:
        """Every stack of the project in the backend (read-only: takes no stack lock)."""
        result = await self._run_unlocked(
            StackTarget("", project, program), [{"op": "list_stacks"}], self.timeout
        )
        return list(result[-1].details["stacks"])

    async def cancel(self, target: StackTarget) -> bool:
        """Ask the running operation on this stack to stop (graceful signal to the CLI)."""
        proc = self._running.get(target.key)
        if proc is None or proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        return True

    async def _run_unlocked(
        self,
        target: StackTarget,
        steps: list[Step],
        timeout: float,
        hints: dict[str, Any] | None = None,
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
        proc = await self._workers.acquire()
        self._running[target.key] = proc
        pid_file = (
            self._pid_file(target) if target.name else None
        )  # read-only listings need no recovery
        if pid_file:
            pid_file.write_text(str(proc.pid))
        session = _WorkerSession(proc, target, self.redactor)
        try:
            reader = asyncio.create_task(session.communicate(request))
            done, _ = await asyncio.wait({reader}, timeout=timeout)
            if not done:
                await self._stop(proc, reader)
                if not repairing:
                    await self._repair(target)
                raise OperationTimeout(
                    f"operation exceeded its {timeout:g}s timeout",
                    stack=target.name,
                    step=session.current_step,
                )
            results = reader.result()
        except asyncio.CancelledError:
            if not repairing:
                await asyncio.shield(self._stop_and_repair(proc, target))
            raise
        finally:
            self._running.pop(target.key, None)
            if pid_file:
                pid_file.unlink(missing_ok=True)
        if session.error and session.error.kind == OperationCancelled.kind and not repairing:
            await self._repair(target)
        if session.error:
            raise session.error
        return results

    async def recover(self, target: StackTarget) -> None:
        """After a daemon crash: stop any CLI still working on the stack, then repair and refresh it.

        The stale lock is cleared only once no worker or CLI for this stack is alive.
        """
        async with self.locked(target):
            for pid in _leftover_pids(self._pid_file(target), target.name):
                log.warning("stack.leftover_process", stack=target.name, pid=pid)
                await _terminate(pid, self.kill_grace)
            self._pid_file(target).unlink(missing_ok=True)
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

    def _pid_file(self, target: StackTarget) -> Path:
        run_dir = self.env.data_dir / "run"
        run_dir.mkdir(exist_ok=True)
        return run_dir / f"{target.project}--{target.name}.pid"

    async def _stop_and_repair(self, proc: asyncio.subprocess.Process, target: StackTarget) -> None:
        if proc.returncode is None:
            await self._stop(proc, None)
        await self._repair(target)

    async def _stop(
        self, proc: asyncio.subprocess.Process, reader: "asyncio.Task[Any] | None"
    ) -> None:
        """One SIGTERM (forwarded to the CLI as a graceful cancel), then SIGKILL after the grace period."""
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace)
        except TimeoutError:
            log.warning("stack.worker_killed", pid=proc.pid, grace_seconds=self.kill_grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(
                    proc.pid, signal.SIGKILL
                )  # the worker leads its own group: CLI and plugins too
            await proc.wait()
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader

    async def _repair(self, target: StackTarget) -> None:
        """Clear the lock and pending operations left by a stopped CLI (none is alive now)."""
        try:
            await self._run_unlocked(target, [{"op": "repair"}], self.timeout)
        except StackError as e:
            log.error("stack.repair_failed", stack=target.name, error=str(e))

    def _worker_env(self) -> dict[str, str]:
        return {**os.environ, **self.env.variables(), "PYTHONUNBUFFERED": "1"}


def _leftover_pids(pid_file: Path, stack: str) -> list[int]:
    """Our worker recorded for the stack, and any `pulumi` CLI still running with `--stack <name>`."""
    pids: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text())
        if b"responder.stacks.worker" in _cmdline(pid):
            pids.append(pid)
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        args = _cmdline(int(proc_dir.name)).split(b"\0")
        if args and args[0].endswith(b"pulumi") and b"--stack" in args:
            i = args.index(b"--stack")
            if i + 1 < len(args) and args[i + 1].decode(errors="replace") == stack:
                pids.append(int(proc_dir.name))
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


async def _terminate(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL to its process group if it has not exited within `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _cmdline(pid):
            return
        await asyncio.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


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


def config_values(config: Mapping[str, object]) -> dict[str, ConfigValue]:
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
        self, proc: asyncio.subprocess.Process, target: StackTarget, redactor: Redactor | None
    ) -> None:
        self.proc = proc
        self.target = target
        self.redactor = redactor
        self.results: list[StepResult] = []
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


class _WorkerPool:
    """Keeps warm worker processes (Python started, pulumi imported) waiting for a request.

    Each worker still runs exactly one request, so isolation is unchanged; only start-up is paid early.
    """

    def __init__(self, env: dict[str, str], spares: int) -> None:
        self._env = env
        self._spares_wanted = spares
        self._spares: deque[asyncio.Task[asyncio.subprocess.Process]] = deque()

    def fill(self) -> None:
        while len(self._spares) < self._spares_wanted:
            self._spares.append(asyncio.ensure_future(self._spawn()))

    async def acquire(self) -> asyncio.subprocess.Process:
        while self._spares:
            proc = await self._spares.popleft()
            self.fill()
            if proc.returncode is None:
                return proc
        return await self._spawn()

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "responder.stacks.worker",
            "--warm",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            start_new_session=True,  # own process group, so a kill reaches the CLI too
            limit=2**22,
        )

    async def close(self) -> None:
        while self._spares:
            task = self._spares.popleft()
            proc = await task
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.communicate()
