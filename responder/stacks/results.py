"""What a stack operation returns: outputs (with their secret flag) and the resource-change summary."""

from dataclasses import dataclass, field
from typing import Any

# What a secret shows as, as in the logs (responder.logs.MASK, checked equal in the tests): not
# imported from there, so that a stack worker need not load the daemon's logging.
MASK = "[secret]"


@dataclass(frozen=True)
class OutputValue:
    value: Any
    secret: bool = False


@dataclass(frozen=True)
class StepResult:
    step: str
    stack: str
    duration: float
    changes: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, OutputValue] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def masked_outputs(self) -> dict[str, Any]:
        return mask_outputs(self.outputs)

    @classmethod
    def from_message(
        cls, step: str, stack: str, duration: float, result: dict[str, Any]
    ) -> "StepResult":
        outputs = {
            name: OutputValue(o["value"], bool(o["secret"]))
            for name, o in (result.pop("outputs", None) or {}).items()
        }
        changes = {k: int(v) for k, v in (result.pop("changes", None) or {}).items()}
        return cls(step, stack, duration, changes, outputs, result)


def mask_outputs(outputs: dict[str, OutputValue]) -> dict[str, Any]:
    """Output values for logs and API answers: secret ones replaced by a mask."""
    return {name: MASK if o.secret else o.value for name, o in outputs.items()}
