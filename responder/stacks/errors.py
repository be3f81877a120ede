"""Our exceptions for stack operations; Pulumi's CLI errors are mapped onto these."""

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    """What went wrong, as the worker reports it and as each `StackError` subclass is keyed."""

    STACK_ERROR = "stack_error"
    STACK_LOCKED = "stack_locked"
    STACK_NOT_FOUND = "stack_not_found"
    STACK_ALREADY_EXISTS = "stack_already_exists"
    PROGRAM_ERROR = "program_error"
    CLI_ERROR = "cli_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    DESTROY_NOT_ALLOWED = "destroy_not_allowed"
    WORKER_CRASHED = "worker_crashed"
    SETTINGS_UNAVAILABLE = "settings_unavailable"
    NODE_FAULT = "node_fault"


class StackError(Exception):
    """A stack operation failed. `retryable` says whether trying again later may succeed."""

    kind: ClassVar[ErrorKind] = ErrorKind.STACK_ERROR
    retryable: ClassVar[bool] = False

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

    kind = ErrorKind.STACK_LOCKED
    retryable = True


class StackNotFoundError(StackError):
    """The stack does not exist in the backend."""

    kind = ErrorKind.STACK_NOT_FOUND


class StackAlreadyExistsError(StackError):
    kind = ErrorKind.STACK_ALREADY_EXISTS


class ProgramError(StackError):
    """The Pulumi program or one of its resources raised."""

    kind = ErrorKind.PROGRAM_ERROR


class CLIError(StackError):
    """The pulumi CLI failed for another reason (treated as transient)."""

    kind = ErrorKind.CLI_ERROR
    retryable = True


class OperationTimeout(StackError):
    kind = ErrorKind.TIMEOUT
    retryable = True


class OperationCancelled(StackError):
    kind = ErrorKind.CANCELLED


class DestroyNotAllowed(StackError):
    """Destroy was asked for without explicitly allowing it."""

    kind = ErrorKind.DESTROY_NOT_ALLOWED


class WorkerCrashed(StackError):
    """The isolated worker process died without reporting a result."""

    kind = ErrorKind.WORKER_CRASHED
    retryable = True


class SettingsUnavailable(StackError):
    """The stack's settings file could not be read from, or saved to, the store shared by the
    nodes: running without it, or leaving it only here, could lose the stack's config."""

    kind = ErrorKind.SETTINGS_UNAVAILABLE
    retryable = True


class NodeFault(StackError):
    """This node could not prepare the operation's files (its disk full, a file in the way of its
    workspace): no fault of the stack's, and maybe gone by the next try."""

    kind = ErrorKind.NODE_FAULT
    retryable = True


ERRORS_BY_KIND: dict[ErrorKind, type[StackError]] = {
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
        SettingsUnavailable,
        NodeFault,
    )
}
# Every kind has its class: the worker reports kinds, the daemon raises the class.
assert set(ERRORS_BY_KIND) == set(ErrorKind)


def error_for(kind: str, message: str, *, stack: str = "", step: str = "") -> StackError:
    """The exception for a kind the worker reported (an unknown kind is a plain `StackError`)."""
    try:
        cls = ERRORS_BY_KIND[ErrorKind(kind)]
    except ValueError:
        cls = StackError
    return cls(message, stack=stack, step=step)
