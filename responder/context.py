"""What a playbook run receives: the event, its incident, a logger, params and the incident's stack."""

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from responder.events import Event, Incident
from responder.notes.note import MAX_NOTES, Note, make_note
from responder.stacks.errors import OperationCancelled
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
    # The stack's outputs (secrets masked) as the store recorded them before this job's first
    # step, whenever it is asked; None for a stack never brought up. Not an operation, not a step.
    async def recorded_outputs(self) -> dict[str, Any] | None: ...


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
    # What `note` buffered; queued with the job's result (see `note`).
    notes: list[Note] = field(default_factory=list)

    async def note(self, text: str, *, fields: Mapping[str, object] | None = None) -> None:
        """Write back to the incident: a note on its PagerDuty timeline (incidents from PagerDuty
        webhooks) and a chat message, for each destination that is configured.

        `fields` are named values shown under the text (use `StepResult.masked_outputs()`: values
        of registered secrets are masked anyway). The note is queued with the job's result, in the
        same transaction, whatever that result (a failing playbook can note why, then raise); a job
        that is retried sends only its last attempt's notes. Delivery never delays or fails the job.
        A job writes at most `MAX_NOTES` notes; more are dropped, with a warning in the log.
        """
        note = make_note(text, fields)
        if len(self.notes) >= MAX_NOTES:
            self.log.warning("note.dropped", reason=f"a job writes at most {MAX_NOTES} notes")
            return
        self.notes.append(note)

    @contextlib.asynccontextmanager
    async def failure_noted(self, what: str) -> AsyncIterator[None]:
        """A failure inside is noted (`<what> failed: <error>`), then raised as before. A cancel by
        request is not a failure: nothing is noted for it."""
        try:
            yield
        except OperationCancelled:
            raise
        except Exception as e:
            await self.note(f"{what} failed: {type(e).__name__}: {e}")
            raise

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
