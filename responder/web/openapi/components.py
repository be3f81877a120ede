"""The JSON shapes of the API's answers, as the document's `components.schemas`."""

from responder.store import DeliveryStatus, IncidentStatus, JobStatus, NoteStatus, StackStatus
from responder.web.openapi.parts import (
    JOB_IDS,
    JSON_OBJECT,
    STRING,
    STRINGS,
    TIME,
    Schema,
    closed_object,
    nullable,
    ref,
)

_JOB_FIELDS: dict[str, Schema] = {
    "id": {"type": "integer"},
    "status": {"enum": [s.value for s in JobStatus]},
    "playbook": STRING,
    "project": STRING,
    "stack": STRING,
    "incident_id": STRING,
    "event_type": STRING,
    "event_id": STRING,
    "delivery_id": STRING,
    "attempts": {"type": "integer"},
    "max_attempts": {"type": "integer"},
    "created_at": TIME,
    "started_at": nullable(TIME),
    "finished_at": nullable(TIME),
    "outputs": {
        **nullable(JSON_OBJECT),
        "description": "The stack's outputs; secret ones are `[secret]`.",
    },
    "error": nullable(STRING),
    "coalesced_into": nullable({"type": "integer"}),
    "plan": {
        **nullable(JSON_OBJECT),
        "description": "The planned changes waiting for (or given) approval.",
    },
    "node": {**nullable(STRING), "description": "The node that holds (or last held) the job."},
    "lease_expires_at": {**nullable(TIME), "description": "Set while the job runs."},
}

_STACK_FIELDS: dict[str, Schema] = {
    "project": STRING,
    "stack": STRING,
    "incident_id": STRING,
    "incident_status": nullable({"enum": [s.value for s in IncidentStatus]}),
    "playbook": STRING,
    "service": nullable(STRING),
    "status": {"enum": [s.value for s in StackStatus]},
    "created_at": TIME,
    "age_seconds": {"type": "number"},
    "last_activity_at": TIME,
    "last_operation": STRING,
    "outputs": nullable(JSON_OBJECT),
    "export_path": {**nullable(STRING), "description": "Its postmortem export, once destroyed."},
    "idle_ttl": nullable({"type": "number"}),
    "max_age": nullable({"type": "number"}),
    "in_backend": {
        "type": "boolean",
        "description": "Whether the backend lists it (absent with `reconcile=false`).",
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        **closed_object({"error": STRING, "status": {"type": "integer"}}),
        "description": "Every error answer of responder's own routes.",
    },
    "EventsV2Error": {
        **closed_object(
            {
                "status": {"enum": ["invalid event", "unavailable"]},
                "message": STRING,
                "errors": STRINGS,
            }
        ),
        "description": "An error of the Events API v2 route, in PagerDuty's shape.",
    },
    "Job": closed_object({**_JOB_FIELDS, "steps": {"type": "array", "items": ref("Step")}}),
    "JobWithNotes": closed_object(
        {
            **_JOB_FIELDS,
            "steps": {"type": "array", "items": ref("Step")},
            "notes": {"type": "array", "items": ref("Note")},
        }
    ),
    "JobSummary": closed_object(_JOB_FIELDS),
    "Note": {
        **closed_object(
            {
                "destination": STRING,
                "status": {"enum": [s.value for s in NoteStatus]},
                "attempts": {"type": "integer"},
                "last_error": nullable(STRING),
                "created_at": TIME,
                "sent_at": nullable(TIME),
            }
        ),
        "description": "A note the job writes back to its incident or chat, without its body.",
    },
    "Step": closed_object(
        {
            "step": STRING,
            "started_at": TIME,
            "duration_ms": {"type": "number"},
            "outcome": STRING,
            "error": nullable(STRING),
            "changes": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Resources by change kind (create, update, delete, same, ...).",
            },
        }
    ),
    "JobList": closed_object(
        {
            "jobs": {"type": "array", "items": ref("JobSummary")},
            "limit": {"type": "integer", "minimum": 1, "maximum": 200},
            "offset": {"type": "integer", "minimum": 0},
            "next_offset": nullable({"type": "integer"}),
        }
    ),
    "Stack": closed_object(_STACK_FIELDS, optional=("in_backend",)),
    "UnknownStack": {
        **closed_object(
            {
                "project": STRING,
                "stack": STRING,
                "status": {"const": "unknown to the store"},
                "in_backend": {"const": True},
            }
        ),
        "description": "A stack the backend lists in a playbook's project and the store does not own.",
    },
    "Delivery": closed_object(
        {
            "id": STRING,
            "source": STRING,
            "event_id": STRING,
            "event_type": STRING,
            "status": {"enum": [s.value for s in DeliveryStatus]},
            "received_at": TIME,
        }
    ),
    "Incident": closed_object(
        {
            "id": STRING,
            "deliveries": {"type": "array", "items": ref("Delivery")},
            "jobs": {"type": "array", "items": ref("Job")},
            "stacks": {"type": "array", "items": ref("Stack")},
        }
    ),
    "Playbook": closed_object(
        {
            "name": STRING,
            "doc": STRING,
            "triggers": STRINGS,
            "manual": {"type": "boolean"},
            "project": STRING,
            "file": nullable(STRING),
        }
    ),
    "Queued": closed_object(
        {
            "job": {"type": "integer"},
            "status": {"enum": [s.value for s in JobStatus if not s.final]},
            "error": STRING,
        },
        optional=("error",),
    ),
    "DeliveryAnswer": closed_object(
        {
            "status": {"enum": [s.value for s in DeliveryStatus]},
            "delivery_id": STRING,
            "event_id": STRING,
            "jobs": JOB_IDS,
        }
    ),
}
