"""An in-memory `StackOperations` for tests that need stacks but not the Pulumi CLI."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from responder.stacks import (
    Call,
    OperationCancelled,
    OperationTimeout,
    Secret,
    StackError,
    StackNotFoundError,
    StackOperations,
    StackTarget,
    StepResult,
)
from responder.stacks.interface import DEFAULT_CALL, DEFAULT_PROGRAM, Config, check_config
from responder.stacks.results import OutputValue


@dataclass
class FakeStack:
    """One stack in the fake backend. Its one resource exists after an `up` (until a destroy); its
    outputs are its config as of that `up`, plus the stack's name."""

    config: dict[str, object] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    deployed: dict[str, object] | None = None  # the config the resource was last deployed with

    def outputs(self, name: str) -> dict[str, OutputValue]:
        if self.deployed is None:
            return {}
        values = {k: OutputValue(v, isinstance(v, Secret)) for k, v in self.deployed.items()}
        return {"stack": OutputValue(name), **values}

    def plan(self, replaces_on: frozenset[str] = frozenset()) -> list[dict[str, str]]:
        """What an `up` would do to the resource: create it; leave it; update it for new config, or
        replace it if a key in `replaces_on` changed."""
        if self.deployed is None:
            return [{"op": "create", "urn": "resource"}]
        changed = {
            k for k in {*self.config, *self.deployed} if self.config.get(k) != self.deployed.get(k)
        }
        op = "replace" if changed & replaces_on else "update" if changed else "same"
        return [{"op": op, "urn": "resource"}]


V = TypeVar("V")
# What an operation does to its stack once it runs, and its result.
Body = Callable[[FakeStack], StepResult]


@dataclass(frozen=True)
class Recorded:
    """One operation as the fake was asked for it."""

    op: str
    target: StackTarget
    config: dict[str, object] | None = None
    tags: dict[str, str] | None = None
    call: Call = DEFAULT_CALL
    remove: bool = False
    export_to: Path | None = None


@dataclass
class Gate:
    """Holds operations of one kind until released: `entered` is set when one is waiting."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class FakeOperations:
    """`StackOperations` over dicts. Like the real one: one operation at a time per stack (FIFO),
    `config=` applied first (told to `on_step`), StackNotFoundError for a stack that is not there,
    OperationTimeout past `call.timeout`, OperationCancelled on `cancel()`.

    Tests inject `fail(op, error)` (raised by the next such operation, after its config),
    `gate(op)` (such operations wait until the test releases them) and `delay(op, seconds)`."""

    def __init__(
        self, *, timeout: float = 600.0, replaces_on: frozenset[str] = frozenset()
    ) -> None:
        self.timeout = timeout
        self.replaces_on = replaces_on  # config keys whose change replaces the resource
        self.pulumi_version = ""
        self.stacks: dict[str, FakeStack] = {}  # by target.key
        self.calls: list[Recorded] = []
        self.recovered: list[StackTarget] = []
        self.abandoned: list[StackTarget] = []  # operations killed for a lost lease
        self.started = 0  # start() calls; an app using the fake starts it like the real one
        self._failures: dict[str, list[StackError]] = {}
        self._gates: dict[str, Gate] = {}
        self._delays: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._cancels: dict[str, asyncio.Event] = {}

    # Test controls.

    def fail(self, op: str, error: StackError, times: int = 1) -> None:
        self._failures.setdefault(op, []).extend([error] * times)

    def gate(self, op: str) -> Gate:
        return self._gates.setdefault(op, Gate())

    def delay(self, op: str, seconds: float) -> None:
        """Operations of this kind take `seconds` (a cancel or a timeout still stops them)."""
        self._delays[op] = seconds

    def ops(self, name: str | None = None) -> list[str]:
        """The operations called, in order (on the stack `name` only, if given)."""
        return [c.op for c in self.calls if name is None or c.target.name == name]

    # StackOperations.

    async def start(self) -> None:
        self.started += 1
        self.pulumi_version = "v0.0.0-fake"

    async def close(self) -> None:
        pass

    @contextlib.asynccontextmanager
    async def locked(self, target: StackTarget) -> AsyncIterator[None]:
        async with self._locks.setdefault(target.key, asyncio.Lock()):
            yield

    async def set_config(
        self,
        target: StackTarget,
        config: Config,
        *,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        recorded = Recorded("set_config", target, dict(config), _opt(tags), call)
        return await self._operation(
            recorded, lambda stack: self._set_config(target, stack, config), creates=True
        )

    async def up(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        recorded = Recorded("up", target, _opt(config), _opt(tags), call)
        return await self._operation(recorded, lambda stack: self._up(target, stack), creates=True)

    async def preview(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        recorded = Recorded("preview", target, _opt(config), _opt(tags), call)
        return await self._operation(
            recorded,
            lambda stack: StepResult(
                "preview",
                target.name,
                0.0,
                _changes(stack.plan(self.replaces_on)),
                details={"plan": stack.plan(self.replaces_on)},
            ),
            creates=True,
        )

    async def refresh(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        recorded = Recorded("refresh", target, _opt(config), _opt(tags), call)
        return await self._operation(
            recorded,
            lambda stack: StepResult(
                "refresh", target.name, 0.0, outputs=stack.outputs(target.name)
            ),
        )

    async def preview_destroy(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        recorded = Recorded("preview_destroy", target, _opt(config), _opt(tags), call)

        def plan(stack: FakeStack) -> StepResult:
            steps = [{"op": "delete", "urn": "resource"}] if stack.deployed is not None else []
            return StepResult(
                "preview_destroy", target.name, 0.0, _changes(steps), details={"plan": steps}
            )

        return await self._operation(recorded, plan)

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
        recorded = Recorded(
            "destroy",
            target,
            _opt(config),
            _opt(tags),
            call,
            remove=remove,
            export_to=export_to,
        )
        return await self._operation(recorded, lambda stack: self._destroy(recorded, stack))

    async def outputs(self, target: StackTarget, *, call: Call = DEFAULT_CALL) -> StepResult:
        return await self._operation(
            Recorded("outputs", target, call=call),
            lambda stack: StepResult(
                "outputs", target.name, 0.0, outputs=stack.outputs(target.name)
            ),
        )

    async def list_stacks(self, project: str, program: str = DEFAULT_PROGRAM) -> list[str]:
        return sorted(key.split("/", 1)[1] for key in self.stacks if key.startswith(f"{project}/"))

    async def cancel(self, target: StackTarget) -> bool:
        cancel = self._cancels.get(target.key)
        if cancel is None or cancel.is_set():
            return False
        cancel.set()
        return True

    async def abandon(self, target: StackTarget) -> bool:
        self.abandoned.append(target)
        return await self.cancel(target)

    async def recover(self, target: StackTarget) -> None:
        async with self.locked(target):
            self.recovered.append(target)
            if (gate := self._gates.get("recover")) is not None:  # held as the real one's refresh
                gate.entered.set()
                await gate.release.wait()

    # The machinery.

    async def _operation(
        self,
        recorded: Recorded,
        body: Body,
        *,
        creates: bool = False,
    ) -> StepResult:
        target, call = recorded.target, recorded.call
        if recorded.config:
            check_config(recorded.config)  # before anything runs, like the real one
        self.calls.append(recorded)
        if call.held and not self._locks.setdefault(target.key, asyncio.Lock()).locked():
            raise AssertionError(f"{recorded.op} on {target.key}: held=True, but no one holds it")
        lock = contextlib.nullcontext() if call.held else self.locked(target)
        async with lock:
            cancel = self._cancels[target.key] = asyncio.Event()
            try:
                async with asyncio.timeout(call.timeout or self.timeout) as scope:
                    try:
                        return await self._steps(recorded, body, creates, cancel)
                    except TimeoutError:
                        if not scope.expired():
                            raise
                raise OperationTimeout(
                    f"operation exceeded its {call.timeout or self.timeout:g}s timeout",
                    stack=target.name,
                    step=recorded.op,
                )
            finally:
                if self._cancels.get(target.key) is cancel:
                    del self._cancels[target.key]

    async def _steps(
        self, recorded: Recorded, body: Body, creates: bool, cancel: asyncio.Event
    ) -> StepResult:
        target, call = recorded.target, recorded.call
        stack = self.stacks.get(target.key)
        if recorded.config and recorded.op != "set_config":  # `config=`: a step of its own first
            if stack is None:
                stack = self.stacks[target.key] = FakeStack(tags=dict(recorded.tags or {}))
            self._done(call, self._set_config(target, stack, recorded.config))
        gate = self._gates.get(recorded.op)
        if gate is not None:
            gate.entered.set()
            await _until(gate.release.wait(), cancel)
        if recorded.op in self._delays:
            await _until(asyncio.sleep(self._delays[recorded.op]), cancel)
        if cancel.is_set():
            raise OperationCancelled("operation cancelled", stack=target.name, step=recorded.op)
        failures = self._failures.get(recorded.op)
        if failures:
            error = failures.pop(0)
            error.stack, error.step = error.stack or target.name, error.step or recorded.op
            raise error
        if stack is None:
            if not creates:
                raise StackNotFoundError(
                    f"no stack named {target.name!r} found", stack=target.name, step=recorded.op
                )
            stack = self.stacks[target.key] = FakeStack(tags=dict(recorded.tags or {}))
        result = body(stack)
        return self._done(call, result)

    def _done(self, call: Call, result: StepResult) -> StepResult:
        if call.on_step is not None:
            call.on_step(result)
        return result

    def _set_config(self, target: StackTarget, stack: FakeStack, config: Config) -> StepResult:
        # Stack config holds strings, as Pulumi's does: anything else JSON-encoded, like the real one.
        stack.config.update(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
        )
        return StepResult("set_config", target.name, 0.0)

    def _up(self, target: StackTarget, stack: FakeStack) -> StepResult:
        changes = _changes(stack.plan(self.replaces_on))
        stack.deployed = dict(stack.config)
        return StepResult("up", target.name, 0.0, changes, outputs=stack.outputs(target.name))

    def _destroy(self, recorded: Recorded, stack: FakeStack) -> StepResult:
        target = recorded.target
        if recorded.export_to is not None:
            state = {"config": {k: str(v) for k, v in stack.config.items()}, "tags": stack.tags}
            recorded.export_to.parent.mkdir(parents=True, exist_ok=True)
            recorded.export_to.write_text(json.dumps(state))
            export = StepResult(
                "export", target.name, 0.0, details={"path": str(recorded.export_to)}
            )
            self._done(recorded.call, export)
        deleted = 1 if stack.deployed is not None else 0
        stack.deployed = None
        if recorded.remove:
            del self.stacks[target.key]
        return StepResult("destroy", target.name, 0.0, {"delete": deleted} if deleted else {})


async def _until(waiting: Awaitable[object], cancel: asyncio.Event) -> None:
    """Wait for `waiting`, or until the operation is cancelled."""
    waits = [asyncio.ensure_future(waiting), asyncio.ensure_future(cancel.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in waits:
            pending.cancel()


def _opt(mapping: Mapping[str, V] | None) -> dict[str, V] | None:
    return dict(mapping) if mapping is not None else None


def _changes(plan: list[dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for step in plan:
        counts[step["op"]] = counts.get(step["op"], 0) + 1
    return counts


def _conforms(ops: FakeOperations) -> StackOperations:
    """mypy checks here that the fake implements the protocol."""
    return ops
