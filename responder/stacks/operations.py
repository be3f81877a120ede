"""`PulumiOperations`: typed stack operations, each in an isolated worker, one at a time per stack."""

import asyncio
import contextlib
import json
import os
import time
import weakref
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from pathlib import Path

from responder import metrics
from responder.logs import Redactor, get_logger
from responder.project_program import ProjectFolderError, read_project
from responder.shielded import shielded
from responder.stacks import processes
from responder.stacks.environment import PulumiEnvironment
from responder.stacks.errors import (
    NodeFault,
    OperationCancelled,
    OperationTimeout,
    SettingsUnavailable,
    StackError,
)
from responder.stacks.interface import (
    DEFAULT_CALL,
    DEFAULT_PROGRAM,
    Call,
    Config,
    StackSettingsStore,
    StackTarget,
)
from responder.stacks.pool import WorkerPool
from responder.stacks.protocol import GRACE_VARIABLE, Request, Step, config_values
from responder.stacks.results import StepResult
from responder.stacks.session import WorkerSession
from responder.stacks.settings_files import SettingsFiles
from responder.store import LeaseLost

log = get_logger("responder.stacks")


# Seconds an operation's CLI gets to cancel gracefully before every process of it is killed: on a
# timeout, a cancel, or its daemon's death (the worker is told by the parent-death signal).
KILL_GRACE = 15.0


class PulumiOperations:
    """The Automation API steps for many stacks, usable from asyncio (implements `StackOperations`).

    Operations on one stack are serialized here (FIFO), never left to fail on Pulumi's lock.
    """

    def __init__(
        self,
        env: PulumiEnvironment,
        *,
        timeout: float = 600.0,
        kill_grace: float = KILL_GRACE,
        redactor: Redactor | None = None,
        warm_workers: int = 1,
        kept_workers: int = 0,
        operations_per_worker: int = 50,
        stateless_programs: Collection[str] = (),
        settings: StackSettingsStore | None = None,
    ) -> None:
        """`settings`: where stacks' settings files are shared with other nodes (the job store).
        `warm_workers` are started ahead of need; up to `kept_workers` that ran a request cleanly
        wait for the next request of the same program, if it is one of `stateless_programs`
        (0: a worker per request), each for `operations_per_worker` in all."""
        self.env = env
        self.settings = SettingsFiles(settings)
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.redactor = redactor
        self.pulumi_version = ""
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cancels: dict[str, asyncio.Event] = {}  # per running stack operation
        self._abandoned: set[str] = set()  # running operations to kill and leave as they are
        self._projects: set[str] = set()
        self._workers = WorkerPool(
            {**self._worker_env(), GRACE_VARIABLE: str(kill_grace)},
            warm_workers,
            kept_workers,
            operations_per_worker,
            stateless_programs,
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
        if self.env.backend_url.startswith("postgres://"):
            await self._open_postgres_backend()
        self._workers.fill()

    async def _open_postgres_backend(self) -> None:
        """Open Pulumi's PostgreSQL backend once (`pulumi whoami`) before any job runs: the CLI
        creates its table on first use, and first uses racing from several nodes' jobs failed one of
        them (PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against itself), which then ran a
        second time. Nodes starting together may race here instead: each tries again shortly."""
        for attempt in range(1, 4):
            proc = await asyncio.create_subprocess_exec(
                str(self.env.pulumi_command),
                "whoami",
                "--non-interactive",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,  # its error names the database's URL
                env=self._worker_env(),
                cwd=self.env.data_dir,
            )
            if await proc.wait() == 0:
                return
            await asyncio.sleep(0.2 * attempt)
        log.warning("stack.backend_open_failed", exit_code=proc.returncode, attempts=3)

    async def close(self) -> None:
        await self._workers.close(self.kill_grace)

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

    # The typed operations. Each is one request to one worker: its `config=` (and a destroy's export)
    # run first in the same session, which saves a worker per step and keeps them under one lock.

    async def set_config(
        self,
        target: StackTarget,
        config: Config,
        *,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        """Only set config (creating the stack if needed)."""
        step: Step = {"op": "set_config", "create": True, "config": config_values(config)}
        return await self._operation(target, step, None, call, tags=tags)

    async def up(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        return await self._operation(target, {"op": "up", "create": True}, config, call, tags=tags)

    async def preview(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        """What `up` would change; `details["plan"]` lists each resource step."""
        step: Step = {"op": "preview", "create": True}
        return await self._operation(target, step, config, call, tags=tags)

    async def refresh(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        return await self._operation(target, {"op": "refresh"}, config, call, tags=tags)

    async def preview_destroy(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        return await self._operation(target, {"op": "preview_destroy"}, config, call, tags=tags)

    async def destroy(
        self,
        target: StackTarget,
        *,
        remove: bool = False,
        export_to: Path | None = None,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        """Destroy every resource; `remove` also deletes the stack; `export_to` first saves its state
        there (the postmortem record, secrets still encrypted)."""
        export: list[Step] = []
        if export_to is not None:
            # Made absolute here: the worker runs in the project's workspace, not in our directory.
            export_to = Path.cwd() / export_to
            export_to.parent.mkdir(parents=True, exist_ok=True)
            export = [{"op": "export", "path": str(export_to)}]
        step: Step = {"op": "destroy", "remove": remove}
        return await self._operation(target, step, config, call, tags=tags, before=export)

    async def outputs(self, target: StackTarget, *, call: Call = DEFAULT_CALL) -> StepResult:
        return await self._operation(target, {"op": "outputs"}, None, call)

    async def list_stacks(self, project: str, program: str = DEFAULT_PROGRAM) -> list[str]:
        """Every stack of the project in the backend (read-only: takes no stack lock)."""
        target = StackTarget("", project, program)
        result = await self._run_unlocked(target, [{"op": "list_stacks"}])
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

    async def abandon(self, target: StackTarget) -> bool:
        cancel = self._cancels.get(target.key)
        if cancel is None:
            return False
        self._abandoned.add(target.key)
        cancel.set()
        return True

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
                await self._run_unlocked(target, [{"op": "refresh"}])
            except StackError as e:
                log.warning("stack.recover_refresh_failed", stack=target.name, error=str(e))

    async def _operation(
        self,
        target: StackTarget,
        step: Step,
        config: Config | None,
        call: Call,
        *,
        tags: Mapping[str, str] | None = None,
        before: list[Step] | None = None,
    ) -> StepResult:
        """Run the step as one request: `config=` first, then the steps `before`, then the step."""
        steps = list(before or [])
        if config:  # checked here, before anything runs
            steps.insert(0, {"op": "set_config", "create": True, "config": config_values(config)})
        steps.append(step)
        return (await self._run(target, steps, call, tags))[-1]

    async def _run(
        self, target: StackTarget, steps: list[Step], call: Call, tags: Mapping[str, str] | None
    ) -> list[StepResult]:
        """Run steps in one worker, under the stack's lock unless the caller holds it (`call.held`)."""
        if call.held:
            return await self._run_unlocked(target, steps, call, tags)
        async with self.locked(target):
            return await self._run_unlocked(target, steps, call, tags)

    async def _run_unlocked(
        self,
        target: StackTarget,
        steps: list[Step],
        call: Call = DEFAULT_CALL,
        tags: Mapping[str, str] | None = None,
    ) -> list[StepResult]:
        """`tags` are set on the stack if one of the steps creates it; `call.exists` says the caller
        knows the stack exists, which saves the worker a `pulumi stack select`."""
        repairing = steps == [{"op": "repair"}]
        with _node_fault(target, "prepare the project's workspace"):
            self._ensure_project(target.project, target.program)
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
        if tags:
            request["tags"] = dict(tags)
        if call.exists:
            request["exists"] = True
        work_dir = self.env.workspace_dir(target.project)
        with _node_fault(target, "restore the stack's settings file"):
            stored = await self.settings.restore(work_dir, target) if target.name else None
        started = time.monotonic()
        try:
            results = await self._send(target, request, call, repairing)
        except BaseException as e:
            kind = e.kind if isinstance(e, StackError) else "interrupted"
            metrics.pulumi_operation(steps[-1]["op"], started, kind)
            if target.name and target.key not in self._abandoned:
                # A failed operation may have changed the file too (a config step before it); the
                # operation's own error is the one to report.
                # Left by a cancelled caller, a lost lease is as expected (the runner says so);
                # a store that stayed unavailable loses the file's change: that is logged.
                with contextlib.suppress(SettingsUnavailable, LeaseLost):
                    await shielded(
                        self.settings.save(work_dir, target, stored, call.job),
                        "settings_save",
                        expected=(LeaseLost,),
                    )
            raise
        finally:
            self._abandoned.discard(target.key)
        metrics.pulumi_operation(steps[-1]["op"], started, None)
        if target.name:
            await self.settings.save(work_dir, target, stored, call.job)
        return results

    async def _send(
        self, target: StackTarget, request: Request, call: Call, repairing: bool
    ) -> list[StepResult]:
        steps = request["steps"]
        cancel = asyncio.Event()
        if target.name:  # read-only listings (no stack name) need neither cancel nor recovery
            # Registered before the worker is acquired, not after: a cancel in between is kept,
            # and the request is then never sent.
            self._cancels[target.key] = cancel
        try:
            worker = await self._workers.acquire(request["program"])
            if cancel.is_set():
                await shielded(self._workers.give_back(worker, self.kill_grace), "worker_end")
                raise OperationCancelled(
                    "operation cancelled before it started", stack=target.name, step=steps[0]["op"]
                )
            session = WorkerSession(worker, target, self.redactor, call.on_step)
            try:
                record = self._worker_record(target) if target.name else None
                if record:  # for recovery, should the daemon die before the session ends
                    record.write_text(worker.marker)
            except OSError as e:
                await shielded(self._workers.give_back(worker, self.kill_grace), "worker_end")
                raise NodeFault(f"cannot record the stack's worker: {e}", stack=target.name) from e
            abandoned = self._abandoned
            try:
                timeout = call.timeout or self.timeout
                return await session.run(
                    request,
                    timeout,
                    cancel,
                    lambda: 0.0 if target.key in abandoned else self.kill_grace,
                )
            except (OperationTimeout, OperationCancelled):
                if not repairing and target.key not in abandoned:
                    await self._repair(target)
                raise
            except asyncio.CancelledError:
                if not repairing and target.key not in abandoned:
                    await shielded(self._repair(target), "repair")
                raise
            finally:
                if record:
                    record.unlink(missing_ok=True)
                if session.reusable:
                    release = self._workers.release(worker, request["program"], self.kill_grace)
                    await shielded(release, "worker_release")
        finally:
            if self._cancels.get(target.key) is cancel:
                del self._cancels[target.key]

    def _ensure_project(self, project: str, program: str) -> None:
        """Write the workspace's Pulumi.yaml once, atomically. Workers must not write it: concurrent
        rewrites of one file let a CLI read it half-written."""
        if project in self._projects:
            return
        work_dir = self.env.workspace_dir(project)
        work_dir.mkdir(parents=True, exist_ok=True)
        tmp = work_dir / f".Pulumi.yaml.{os.getpid()}"
        # main: the program's directory, where dynamic providers start; like the SDK's default, our
        # working directory, so modules importable here are importable there. A project folder's
        # program (an absolute path) imports its own modules, from its own directory.
        main = os.getcwd()
        if Path(program).is_absolute():
            # A broken folder is left to the worker, which reports it as the job's error.
            with contextlib.suppress(ProjectFolderError):
                main = str(read_project(Path(program)).directory)
        tmp.write_text(f"name: {project}\nruntime: python\nmain: {json.dumps(main)}\n")
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
            await self._run_unlocked(target, [{"op": "repair"}])
        except StackError as e:
            log.error("stack.repair_failed", stack=target.name, error=str(e))

    def _worker_env(self) -> dict[str, str]:
        # Not the metrics directory: workers record no metrics, and any process importing
        # prometheus-client with it set would leave its own files there, never marked dead.
        inherited = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROCESS_VARIABLE}
        return {**inherited, **self.env.variables(), "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def _node_fault(target: StackTarget, what: str) -> Iterator[None]:
    """An OSError of this node's own files for an operation (a full disk, a file in the way), as
    a `NodeFault`: retried like a node's fault, not the job failed for good as a playbook's error."""
    try:
        yield
    except OSError as e:
        raise NodeFault(f"cannot {what}: {e}", stack=target.name) from e
