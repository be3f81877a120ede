"""The typed stack-operations API: what the runner, the reaper, the HTTP API and replay need of stacks."""

import json
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from responder.stacks.results import StepResult

DEFAULT_PROJECT = "burner"
DEFAULT_PROGRAM = "burner_program:pulumi_program"

# Config values are strings or JSON-encodable values; wrap one in `Secret` to store it encrypted.
Config = Mapping[str, object]


class Secret(str):
    """A config value to store encrypted; its repr never shows the value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('[secret]')"


# Secret config shorter than this is refused: the log redactor ignores short strings (they would
# mask ordinary words), so a shorter secret would appear in logs and errors unmasked.
SECRET_MIN_LENGTH = 8


def check_config(config: Config) -> None:
    """Refuse config that cannot be handled safely, with a ValueError that names the key (never the
    value): a `Secret` shorter than SECRET_MIN_LENGTH, or a value that is neither a string nor
    JSON-encodable."""
    for key, value in config.items():
        if isinstance(value, Secret) and len(value) < SECRET_MIN_LENGTH:
            raise ValueError(
                f"secret config {key!r} is shorter than {SECRET_MIN_LENGTH} characters: "
                "too short to be masked in logs"
            )
        if not isinstance(value, str):
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"config {key!r} is a {type(value).__name__}: give a string or a JSON value"
                ) from None


@dataclass(frozen=True)
class StackTarget:
    """Which stack, of which project, running which program."""

    name: str
    project: str = DEFAULT_PROJECT
    program: str = DEFAULT_PROGRAM

    @property
    def key(self) -> str:
        return f"{self.project}/{self.name}"


@dataclass(frozen=True)
class Call:
    """How one operation runs. The default: under the stack's lock, with the operations' timeout."""

    timeout: float | None = None  # seconds; None: the operations' own timeout
    held: bool = False  # the caller already holds `locked(target)` for a sequence of operations
    exists: bool = False  # the caller knows the stack exists: no need to select or create it
    # Told each completed step as it completes (a `set_config` given as `config=`, an export before a
    # destroy, then the operation itself): a caller keeps those of an operation that fails later.
    on_step: Callable[[StepResult], None] | None = None
    # The (job id, fence) the operation runs for: the stack's settings it changed are stored only
    # while that job still holds its lease (a node that lost it must not overwrite the next's).
    job: tuple[int, int] | None = None


DEFAULT_CALL = Call()


class StackOperations(Protocol):
    """Pulumi's steps for many stacks. Operations on one stack run one at a time, in call order.

    `config=` is applied in the same session just before the operation; `tags=` are set if the
    operation creates the stack (any that takes `config=` may). Failures raise `StackError`
    subclasses (see stacks.errors); config refused by `check_config` raises its ValueError before
    anything runs.
    """

    pulumi_version: str  # empty until started

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def locked(self, target: StackTarget) -> AbstractAsyncContextManager[None]:
        """Hold the stack for a sequence of operations; other callers queue behind, in order."""
        ...

    async def set_config(
        self,
        target: StackTarget,
        config: Config,
        *,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        """Only set config (creating the stack if needed)."""
        ...

    async def up(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult: ...

    async def preview(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        """What `up` would change; `details["plan"]` lists each resource step."""
        ...

    async def refresh(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult:
        """Refresh the stack's state from its resources; `config=` may create it (then `tags=`)."""
        ...

    async def preview_destroy(
        self,
        target: StackTarget,
        *,
        config: Config | None = None,
        tags: Mapping[str, str] | None = None,
        call: Call = DEFAULT_CALL,
    ) -> StepResult: ...

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
        ...

    async def outputs(self, target: StackTarget, *, call: Call = DEFAULT_CALL) -> StepResult: ...

    async def list_stacks(self, project: str, program: str = DEFAULT_PROGRAM) -> list[str]:
        """Every stack of the project in the backend (read-only: takes no stack lock)."""
        ...

    async def cancel(self, target: StackTarget) -> bool:
        """Stop the stack's running operation gracefully; False if none is running."""
        ...

    async def abandon(self, target: StackTarget) -> bool:
        """Kill the stack's running operation at once, every process of it, and leave the stack as
        it is: no repair, no saved settings. For a job this node no longer holds: the node that
        holds it now repairs the stack, and must not find us writing to it. False if none runs."""
        ...

    async def recover(self, target: StackTarget) -> None:
        """After a crash: end what is left of the stack's last operation, repair and refresh it."""
        ...


class StackSettingsStore(Protocol):
    """Where each stack's settings file is kept for every node (the job store implements it)."""

    async def stack_settings(self, project: str, stack: str) -> str | None: ...
    async def save_stack_settings(
        self, project: str, stack: str, text: str | None, *, held: tuple[int, int] | None = None
    ) -> None: ...
