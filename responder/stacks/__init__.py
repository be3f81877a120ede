"""The stack-operations layer: Pulumi Automation API steps, isolated in worker processes."""

from responder.stacks.environment import PulumiEnvironment
from responder.stacks.errors import (
    CLIError,
    DestroyNotAllowed,
    OperationCancelled,
    OperationTimeout,
    ProgramError,
    StackError,
    StackLockedError,
    StackNotFoundError,
    WorkerCrashed,
)
from responder.stacks.operations import Secret, Stack, StackOperations, StackTarget
from responder.stacks.results import OutputValue, StepResult, mask_outputs

__all__ = [
    "CLIError",
    "DestroyNotAllowed",
    "OperationCancelled",
    "OperationTimeout",
    "OutputValue",
    "ProgramError",
    "PulumiEnvironment",
    "Secret",
    "Stack",
    "StackError",
    "StackLockedError",
    "StackNotFoundError",
    "StackOperations",
    "StackTarget",
    "StepResult",
    "WorkerCrashed",
    "mask_outputs",
]
