"""Our exceptions for stack operations; Pulumi's CLI errors are mapped onto these."""


class StackError(Exception):
    """A stack operation failed. `retryable` says whether trying again later may succeed."""

    kind = "stack_error"
    retryable = False

    def __init__(self, message: str, *, stack: str = "", step: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stack = stack
        self.step = step

    def __str__(self) -> str:
        where = " ".join(
            p
            for p in (self.stack and f"stack={self.stack}", self.step and f"step={self.step}")
            if p
        )
        return f"{self.message} ({where})" if where else self.message


class StackLockedError(StackError):
    """Another update holds the stack's lock."""

    kind = "stack_locked"
    retryable = True


class StackNotFoundError(StackError):
    """The stack does not exist in the backend."""

    kind = "stack_not_found"


class StackAlreadyExistsError(StackError):
    kind = "stack_already_exists"


class ProgramError(StackError):
    """The Pulumi program or one of its resources raised."""

    kind = "program_error"


class CLIError(StackError):
    """The pulumi CLI failed for another reason (treated as transient)."""

    kind = "cli_error"
    retryable = True


class OperationTimeout(StackError):
    kind = "timeout"
    retryable = True


class OperationCancelled(StackError):
    kind = "cancelled"


class DestroyNotAllowed(StackError):
    """Destroy was asked for without explicitly allowing it."""

    kind = "destroy_not_allowed"


class WorkerCrashed(StackError):
    """The isolated worker process died without reporting a result."""

    kind = "worker_crashed"
    retryable = True


ERRORS_BY_KIND: dict[str, type[StackError]] = {
    cls.kind: cls
    for cls in (
        StackError,
        StackLockedError,
        StackNotFoundError,
        StackAlreadyExistsError,
        ProgramError,
        CLIError,
        OperationTimeout,
        OperationCancelled,
        DestroyNotAllowed,
        WorkerCrashed,
    )
}
