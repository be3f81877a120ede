"""The JSON shapes of the API's answers: jobs with their steps, stacks, and an incident's record."""

import datetime

from responder.store import (
    DeliveryRecord,
    IncidentRecord,
    Job,
    JobStatus,
    NoteRecord,
    StackRecord,
    StepRecord,
)

JSON = dict[str, object]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def job_json(job: Job, *, steps: bool = True) -> JSON:
    data: JSON = {
        "id": job.id,
        "status": job.status.value,
        "playbook": job.playbook,
        "project": job.project,
        "stack": job.stack,
        "incident_id": job.incident_id,
        "event_type": job.event_type,
        "event_id": job.event.id,
        "delivery_id": job.delivery_id,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "outputs": job.outputs,  # masked when stored
        "error": job.error,
        "coalesced_into": job.coalesced_into,
        "plan": job.plan,
        # The node that holds (or last held) the job, and until when, while it runs.
        "node": job.node,
        "lease_expires_at": iso(job.lease_expires_at) if job.status == JobStatus.RUNNING else None,
    }
    if steps:
        data["steps"] = [step_json(s) for s in job.steps]
    return data


def note_json(note: NoteRecord) -> JSON:
    """A note's delivery, without its body (the note is on the incident, or its error says why not)."""
    return {
        "destination": note.destination,
        "status": note.status.value,
        "attempts": note.attempts,
        "last_error": note.last_error,
        "created_at": iso(note.created_at),
        "sent_at": iso(note.sent_at),
    }


def step_json(step: StepRecord) -> JSON:
    return {
        "step": step.step,
        "started_at": iso(step.started_at),
        "duration_ms": step.duration_ms,
        "outcome": step.outcome,
        "error": step.error,
        "changes": step.changes,
    }


def stack_json(record: StackRecord, now: float) -> JSON:
    return {
        "project": record.project,
        "stack": record.stack,
        "incident_id": record.incident_id,
        "incident_status": record.incident_status.value if record.incident_status else None,
        "playbook": record.playbook,
        "service": record.service or None,
        "status": record.status.value,
        "created_at": iso(record.created_at),
        "age_seconds": round(now - record.created_at, 1),
        "last_activity_at": iso(record.last_activity_at),
        "last_operation": record.last_operation,
        "outputs": record.outputs,  # masked when stored
        "export_path": record.export_path,
        "idle_ttl": record.idle_ttl,
        "max_age": record.max_age,
    }


def delivery_json(delivery: DeliveryRecord) -> JSON:
    return {
        "id": delivery.id,
        "source": delivery.source,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status.value,
        "received_at": iso(delivery.received_at),
    }


def incident_json(incident: IncidentRecord, now: float) -> JSON:
    return {
        "id": incident.id,
        "deliveries": [delivery_json(d) for d in incident.deliveries],
        "jobs": [job_json(j) for j in incident.jobs],
        "stacks": [stack_json(s, now) for s in incident.stacks],
    }
