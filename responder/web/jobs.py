"""Job routes: reading jobs and an incident's record, approving, rejecting and cancelling."""

from aiohttp import web

from responder import metrics
from responder.logs import get_logger
from responder.store import Job, JobStatus
from responder.web.auth import require_token
from responder.web.daemon import DAEMON
from responder.web.errors import ApiError
from responder.web.query import job_id_of, whole_number
from responder.web.shapes import incident_json, job_json, note_json

log = get_logger("responder.api")

MAX_PAGE = 200

routes = web.RouteTableDef()


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    status = _status(query.get("status"))
    limit = min(whole_number(query.get("limit", "50"), "limit", low=1), MAX_PAGE)
    offset = whole_number(query.get("offset", "0"), "offset")
    jobs = await request.app[DAEMON].store.list_jobs(
        incident_id=query.get("incident"), status=status, limit=limit, offset=offset
    )
    next_offset = offset + limit if len(jobs) == limit else None
    return web.json_response(
        {
            "jobs": [job_json(j, steps=False) for j in jobs],
            "limit": limit,
            "offset": offset,
            "next_offset": next_offset,
        }
    )


def _status(raw: str | None) -> JobStatus | None:
    if not raw:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        raise ApiError(
            400, f"status must be one of {', '.join(s.value for s in JobStatus)}"
        ) from None


@routes.get("/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    store = request.app[DAEMON].store
    job = await store.get_job(job_id_of(request))
    if job is None:
        raise ApiError(404, "no such job")
    # The notes it wrote back to the incident and chat: where each stands, and why one failed.
    return web.json_response(
        {**job_json(job), "notes": [note_json(n) for n in await store.job_notes(job.id)]}
    )


@routes.get("/incidents/{id}")
async def get_incident(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    incident = await daemon.store.incident(request.match_info["id"])
    if incident is None:
        raise ApiError(404, "no such incident")
    return web.json_response(incident_json(incident, daemon.clock()))


@routes.post("/jobs/{id}/{decision:approve|reject}")
async def decide_job(request: web.Request) -> web.Response:
    """Decide a job waiting in `awaiting_approval`."""
    daemon = request.app[DAEMON]
    require_token(request, daemon.credentials.api_token)
    job_id = job_id_of(request)
    approve = request.match_info["decision"] == "approve"
    now = daemon.clock()
    decision = await daemon.store.decide(job_id, approve, now, "rejected by request")
    if decision is None:
        raise ApiError(404, "no such job")
    job = decision.job
    if not decision.made:
        if not _decided_so(job, approve):  # decided otherwise, or never asked (nor approved)
            raise ApiError(409, f"job is {job.status.value}, not awaiting approval")
        # The same decision again (a retry whose answer was lost): answered as before, and neither
        # logged nor counted again.
        return web.json_response(job_json(job))
    metrics.job_ended_by(job, now)
    log.info("job.approved" if approve else "job.rejected", job_id=job_id)
    daemon.runner.notify()
    return web.json_response(job_json(job))


def _decided_so(job: Job, approve: bool) -> bool:
    """Whether the job stands as this decision left it: approved and waiting its turn, or rejected."""
    if approve:
        return job.status == JobStatus.QUEUED and job.approved_plan is not None
    return job.status == JobStatus.REJECTED


@routes.post("/jobs/{id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    require_token(request, daemon.credentials.api_token)
    job_id = job_id_of(request)
    job = await daemon.runner.cancel(job_id)
    if job is None:
        raise ApiError(404, "no such job")
    if job.status.final and job.status != JobStatus.CANCELLED:
        raise ApiError(409, f"job already {job.status.value}")
    log.info("job.cancel_requested", job_id=job_id, status=job.status.value)
    return web.json_response(job_json(job), status=202 if job.status == JobStatus.RUNNING else 200)
