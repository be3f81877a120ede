"""The JSON API's routes: probes, jobs, incidents, playbooks, stacks, metrics and this document."""

from responder.store import JobStatus
from responder.web.openapi.parts import (
    BAD_REQUEST,
    BODY_ERRORS,
    JSON_MEDIA,
    NOT_FOUND,
    OPENMETRICS,
    STRING,
    WRITE_ERRORS,
    WRITE_SECURITY,
    Schema,
    answer,
    closed_object,
    error,
    job_id_param,
    nullable,
    probe_route,
    read_route,
    ref,
)
from responder.web.query import MAX_ID


def decision_route(decision: str, doc: str) -> Schema:
    return {
        "post": {
            "operationId": f"{decision}Job",
            "summary": doc,
            "tags": ["jobs"],
            "security": WRITE_SECURITY,
            "parameters": [job_id_param()],
            "responses": {
                "200": answer("The job as decided", ref("Job")),
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "409": error("The job is not awaiting approval"),
                **WRITE_ERRORS,
            },
        }
    }


def job_links(job_id: str) -> Schema:
    """What a client can do next with the job an answer names (schemathesis follows these)."""
    return {
        name: {"operationId": operation, "parameters": {"id": job_id}}
        for name, operation in (
            ("GetJob", "getJob"),
            ("CancelJob", "cancelJob"),
            ("ApproveJob", "approveJob"),
            ("RejectJob", "rejectJob"),
            ("JobPage", "uiJob"),
        )
    }


API_PATHS: dict[str, Schema] = {
    "/": read_route(
        "root",
        '`{"response": "OK"}`',
        {"200": answer("OK", closed_object({"response": {"const": "OK"}}))},
        store=False,
    ),
    "/healthz": probe_route(
        "healthz", "Alive", {"200": answer("Alive", closed_object({"status": {"const": "ok"}}))}
    ),
    "/readyz": probe_route(
        "readyz",
        "Ready: store, CLI, playbooks and runner, each check with its reason",
        {
            status: answer(
                description,
                closed_object(
                    {
                        "status": {"enum": ["ready", "not ready"]},
                        "node": STRING,
                        "checks": {"type": "object", "additionalProperties": STRING},
                    }
                ),
            )
            for status, description in (("200", "Ready"), ("503", "Not ready; each check says why"))
        },
    ),
    "/openapi.json": read_route(
        "openapi",
        "This document",
        {
            "200": answer(
                "The OpenAPI 3.1 document", {"type": "object", "required": ["openapi", "paths"]}
            )
        },
        store=False,
    ),
    "/metrics": read_route(
        "metrics",
        "Prometheus metrics of every process, and the store's queue depth and live stacks",
        {
            "200": {
                "description": "The exposition: Prometheus' text format, or OpenMetrics if the "
                "`Accept` header asks for it",
                "content": {"text/plain": {"schema": STRING}, OPENMETRICS: {"schema": STRING}},
            }
        },
        store=False,  # a failing store leaves its gauges out; the scrape still answers
        tags=["operations"],
    ),
    "/jobs": read_route(
        "listJobs",
        "Jobs, newest first, paginated",
        {
            "200": answer("A page of jobs (without their steps)", ref("JobList")),
            "400": BAD_REQUEST,
        },
        tags=["jobs"],
        parameters=[
            {
                "name": "incident",
                "in": "query",
                "schema": STRING,
                "description": "Only this incident's jobs.",
            },
            {
                "name": "status",
                "in": "query",
                "schema": {"enum": ["", *(s.value for s in JobStatus)]},
                "description": "Only jobs in this status (empty: any).",
            },
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID, "default": 50},
                "description": "Page size; above 200 counts as 200.",
            },
            {
                "name": "offset",
                "in": "query",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID, "default": 0},
            },
        ],
    ),
    "/jobs/{id}": read_route(
        "getJob",
        "A job with its steps, outputs (secrets masked), plan and error",
        {"200": answer("The job", ref("JobWithNotes")), "400": BAD_REQUEST, "404": NOT_FOUND},
        tags=["jobs"],
        parameters=[job_id_param()],
    ),
    "/jobs/{id}/approve": decision_route(
        "approve", "Approve a job awaiting approval: it runs again"
    ),
    "/jobs/{id}/reject": decision_route("reject", "Reject a job awaiting approval"),
    "/jobs/{id}/cancel": {
        "post": {
            "operationId": "cancelJob",
            "summary": "Stop a job: at once unless it is running",
            "tags": ["jobs"],
            "security": WRITE_SECURITY,
            "parameters": [job_id_param()],
            "responses": {
                "200": answer("Cancelled", ref("Job")),
                "202": answer("Running: its operation is being stopped", ref("Job")),
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "409": error("The job had already ended"),
                **WRITE_ERRORS,
            },
        }
    },
    "/incidents/{id}": read_route(
        "getIncident",
        "An incident's deliveries, jobs and stacks",
        {"200": answer("The incident", ref("Incident")), "404": NOT_FOUND},
        tags=["incidents"],
        parameters=[{"name": "id", "in": "path", "required": True, "schema": STRING}],
    ),
    "/playbooks": read_route(
        "listPlaybooks",
        "The loaded playbooks",
        {
            "200": answer(
                "The operator's playbooks, in load order",
                closed_object({"playbooks": {"type": "array", "items": ref("Playbook")}}),
            )
        },
        tags=["playbooks"],
    ),
    "/playbooks/{name}/run": {
        "post": {
            "operationId": "runPlaybook",
            "summary": "Run a playbook by hand with a synthetic event",
            "tags": ["playbooks"],
            "security": WRITE_SECURITY,
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": STRING},
                {
                    "name": "wait",
                    "in": "query",
                    "schema": {"type": "number", "default": 0},
                    "description": "Seconds to wait for the job to end (at most 600; negative counts as 0).",
                },
            ],
            "requestBody": {
                "required": False,
                "content": {
                    JSON_MEDIA: {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "incident_id": nullable(STRING),
                                "params": {
                                    "type": "object",
                                    "additionalProperties": STRING,
                                    "description": "Only params the playbook declares.",
                                },
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    **answer("The job ended within `wait`", ref("Job")),
                    "links": job_links("$response.body#/id"),
                },
                "202": {
                    **answer(
                        "Queued (no `wait`), or not ended after it, in its status then",
                        ref("Queued"),
                    ),
                    "links": job_links("$response.body#/job"),
                },
                "400": BAD_REQUEST,
                "404": error("No playbook of that name in the playbooks dir"),
                **BODY_ERRORS,
                **WRITE_ERRORS,
            },
        }
    },
    "/stacks": read_route(
        "listStacks",
        "Live burner stacks, reconciled with the backend",
        {
            "200": answer(
                "The store's stacks, and the backend's stacks the store does not know",
                closed_object(
                    {
                        "stacks": {
                            "type": "array",
                            "items": {"anyOf": [ref("Stack"), ref("UnknownStack")]},
                        }
                    }
                ),
            )
        },
        tags=["stacks"],
        parameters=[
            {
                "name": "reconcile",
                "in": "query",
                "schema": {"type": "string", "default": "true"},
                "description": "`false` (any case) skips listing the backend; anything else lists it.",
            }
        ],
        description="A 503 also when the backend's stacks cannot be listed.",
    ),
}
