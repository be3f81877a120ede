"""The stack-operations layer: Pulumi Automation API steps, isolated in worker processes."""

from responder.stacks.environment import PulumiEnvironment
from responder.stacks.errors import (
    CLIError,
    DestroyNotAllowed,
    ErrorKind,
    OperationCancelled,
    OperationTimeout,
    ProgramError,
    SettingsUnavailable,
    StackAlreadyExistsError,
    StackError,
    StackLockedError,
    StackNotFoundError,
    WorkerCrashed,
)
from responder.stacks.interface import (
    Call,
    Config,
    Secret,
    StackOperations,
    StackTarget,
    check_config,
)
from responder.stacks.operations import PulumiOperations
from responder.stacks.results import OutputValue, StepResult, mask_outputs

__all__ = [
    "CLIError",
    "Call",
    "Config",
    "DestroyNotAllowed",
    "ErrorKind",
    "OperationCancelled",
    "OperationTimeout",
    "OutputValue",
    "ProgramError",
    "PulumiEnvironment",
    "PulumiOperations",
    "Secret",
    "SettingsUnavailable",
    "StackAlreadyExistsError",
    "StackError",
    "StackLockedError",
    "StackNotFoundError",
    "StackOperations",
    "StackTarget",
    "StepResult",
    "WorkerCrashed",
    "check_config",
    "mask_outputs",
]
