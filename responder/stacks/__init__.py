"""The stack-operations layer: Pulumi Automation API steps, isolated in worker processes."""

# Loaded on first use (PEP 562): a stack worker imports this package for its own modules only, and
# must not pay for the daemon's side (aiohttp, structlog, the worker pool) on every start.

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from responder.stacks.environment import PulumiEnvironment
    from responder.stacks.errors import (
        CLIError,
        DestroyNotAllowed,
        ErrorKind,
        NodeFault,
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

_MODULES = {
    "PulumiEnvironment": "environment",
    "PulumiOperations": "operations",
    **dict.fromkeys(("Call", "Config", "Secret", "StackOperations", "StackTarget"), "interface"),
    "check_config": "interface",
    **dict.fromkeys(("OutputValue", "StepResult", "mask_outputs"), "results"),
}


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULES.get(name, 'errors')}")
    return getattr(module, name)


__all__ = [
    "CLIError",
    "Call",
    "Config",
    "DestroyNotAllowed",
    "ErrorKind",
    "NodeFault",
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
