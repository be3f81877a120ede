"""What the web page shows, read from the store: incidents, live stacks, approvals, one job."""

import json
from dataclasses import dataclass, field

from responder.store import IncidentSummary, Job, JobStatus, StackRecord, Store

MAX_INCIDENTS = 50  # the incidents with the newest jobs are shown; older ones stay in the JSON API
MAX_WAITING = 200
JOBS_PER_INCIDENT = 10  # listed in an incident's row, newest first (a flapping alert has many)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)  # work in progress: the page refreshes itself


@dataclass
class IncidentRow:
    id: str
    title: str
    status: str
    sources: list[str]
    service: str
    jobs: list[Job]  # the newest `JOBS_PER_INCIDENT`, newest first
    older_jobs: int  # how many more there are
    stacks: list[StackRecord]


@dataclass
class StackRow:
    record: StackRecord
    age_seconds: float
    idle_deadline: float | None  # when the idle TTL destroys it, if nothing happens before
    age_deadline: float | None  # when the maximum age destroys it, whatever happens


@dataclass
class Overview:
    incidents: list[IncidentRow]
    stacks: list[StackRow]
    waiting: list[Job]
    active: bool
    plans: dict[int, list[dict[str, object]]] = field(default_factory=dict)


async def overview(store: Store, now: float) -> Overview:
    recent = await store.recent_incident_ids(MAX_INCIDENTS)
    records = await store.list_stacks()
    # Then those with live stacks but no job left (pruned), if there is room.
    order = list(dict.fromkeys(recent + [r.incident_id for r in records]))
    incidents = []
    for incident_id in order[:MAX_INCIDENTS]:
        summary = await store.incident_summary(incident_id, JOBS_PER_INCIDENT)
        if summary is not None:
            incidents.append(incident_row(summary))
    waiting = await store.list_jobs(status=JobStatus.AWAITING_APPROVAL, limit=MAX_WAITING)
    active = any([await store.list_jobs(status=s, limit=1) for s in ACTIVE])
    return Overview(
        incidents=incidents,
        stacks=[stack_row(r, now) for r in records],
        waiting=waiting,
        active=active,
        plans={j.id: plan_steps(j) for j in waiting},
    )


def incident_row(summary: IncidentSummary) -> IncidentRow:
    # The newest full description its newest jobs' events carried (a note only names the incident).
    described = [j.event.incident for j in summary.jobs if j.event.incident is not None]
    full = [i for i in described if not i.partial] or described
    latest = full[0] if full else None
    service = latest.service if latest else None
    return IncidentRow(
        id=summary.id,
        title=latest.title if latest else "",
        status=summary.status.value if summary.status else "not reported",
        sources=list(summary.sources or dict.fromkeys(j.event.source for j in summary.jobs)),
        service=(service.summary or service.id) if service else "",
        jobs=list(summary.jobs),
        older_jobs=max(0, summary.job_count - len(summary.jobs)),
        stacks=list(summary.stacks),
    )


def stack_row(record: StackRecord, now: float) -> StackRow:
    return StackRow(
        record=record,
        age_seconds=now - record.created_at,
        idle_deadline=record.last_activity_at + record.idle_ttl if record.idle_ttl else None,
        age_deadline=record.created_at + record.max_age if record.max_age else None,
    )


def plan_steps(job: Job) -> list[dict[str, object]]:
    """The plan's resource steps (operation and URN), as the approver reads them."""
    steps = (job.plan or {}).get("steps", [])
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def pretty_json(value: object) -> str:
    """Outputs as indented JSON text (already masked by the store); the template escapes it."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)
