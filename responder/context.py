"""What a playbook run receives: the event, its incident, a logger, params and the incident's stack."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from responder.events import Event, Incident
from responder.stacks.results import StepResult


class StackHandle(Protocol):
    """The incident's burner stack, as a playbook sees it. Every call is recorded as a job step."""

    name: str

    async def set_config(self, config: Mapping[str, object]) -> StepResult: ...
    async def up(self) -> StepResult: ...
    async def refresh(self) -> StepResult: ...
    async def preview(self) -> StepResult: ...
    # A stack the backend doesn't have raises StackNotFoundError, unless missing_ok: then the result's
    # details say {"already_gone": True}. Either way the stack is recorded as destroyed.
    async def destroy(self, *, remove: bool = True, missing_ok: bool = False) -> StepResult: ...
    async def outputs(self) -> StepResult: ...


@dataclass
class Context:
    """What a playbook run receives."""

    event: Event
    incident: Incident | None
    log: FilteringBoundLogger
    stack: StackHandle
    playbook: str
    job_id: int | None = None
    # Operator defaults (target_url, scratch_root) overlaid with the playbook's declared run params.
    params: dict[str, str] = field(default_factory=dict)

    def incident_config(self, **extra: object) -> dict[str, object]:
        """The burner program's config for this incident: `incident_id`, the incident context as
        JSON (`incident`), the operator's `target_url` when set, then `extra` over them.

        The scratch root is not config: the program takes it from the daemon's environment.
        """
        config: dict[str, object] = {
            "incident_id": self.event.incident_id or self.event.id,
            "incident": json.dumps(incident_context(self.incident, self.event.type)),
        }
        if self.params.get("target_url"):
            config["target_url"] = self.params["target_url"]
        return {**config, **extra}


def incident_context(incident: Incident | None, event_type: str) -> dict[str, object]:
    """What the burner program writes into the stack's `context.json`; empty fields left out."""
    if incident is None:
        return {}
    context: dict[str, object] = {
        "title": incident.title,
        "status": incident.status,
        "urgency": incident.urgency,
        "number": incident.number,
        "priority": incident.priority.summary if incident.priority else None,
        "service": incident.service.summary if incident.service else None,
        "incident_key": incident.incident_key,
        "html_url": incident.html_url,
        "links": [{"href": link.href, "text": link.text} for link in incident.links],
        "event_type": event_type,
    }
    return {k: v for k, v in context.items() if v not in (None, "", [])}
