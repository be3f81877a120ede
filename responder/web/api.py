"""The JSON API: health, jobs, incidents, and running a playbook by hand."""

import asyncio
import datetime
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from responder.enqueue import Run, enqueue
from responder.events import Event, Incident
from responder.logs import get_logger
from responder.sources import Arrival
from responder.sources.parsing import InvalidJson, decode_json, quoted
from responder.stacks import StackError, StackOperations
from responder.store import Job, JobStatus, StackRecord, Store, StoreUnavailable
from responder.web.auth import require_token
from responder.web.daemon import DAEMON
from responder.web.errors import ApiError
from responder.web.webhooks import deps

log = get_logger("responder.api")

MAX_PAGE = 200
MAX_WAIT_SECONDS = 600
MAX_ID = 2**63 - 1  # the store's integers are signed 64-bit
READY_STORE_TIMEOUT = 2.0  # seconds /readyz waits for the store: a probe must answer promptly
RECONCILE_INTERVAL = 5.0  # seconds a backend listing serves GET /stacks before the next one
MAX_NAMED = 20  # undeclared parameters named in one error

_DIGITS = re.compile(r"[0-9]{1,19}")


async def root(_request: web.Request) -> web.Response:
    return web.json_response({"response": "OK"})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers, the CLI was found, playbooks are loaded, and the runner and
    reaper are running with no store call failing (they retry it, and this says why they wait)."""
    daemon = request.app[DAEMON]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_STORE_TIMEOUT):
            await daemon.store.ping()
        checks["store"] = "ok"
    except StoreUnavailable as e:
        checks["store"] = str(e)
    except TimeoutError:
        checks["store"] = f"no answer within {READY_STORE_TIMEOUT:g}s (busy or locked)"
    checks["pulumi"] = (
        f"ok ({daemon.ops.pulumi_version})" if daemon.ops.pulumi_version else "not found"
    )
    loaded = daemon.playbook_order  # the operator's playbooks, not responder's own
    checks["playbooks"] = f"ok ({len(loaded)})" if loaded else "none loaded"
    problem = daemon.runner.health.problem
    checks["runner"] = (
        "starting"
        if not daemon.ready
        else f"waiting for the store ({problem})"
        if problem
        else "ok"
    )
    ready = all(v.startswith("ok") for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def get_job(request: web.Request) -> web.Response:
    job = await request.app[DAEMON].store.get_job(_job_id(request))
    if job is None:
        raise ApiError(404, "no such job")
    return web.json_response(job_json(job))


async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    status = query.get("status")
    if status and status not in JobStatus.__members__.values():
        raise ApiError(400, f"status must be one of {', '.join(s.value for s in JobStatus)}")
    limit = min(_int(query.get("limit", "50"), "limit", low=1), MAX_PAGE)
    offset = _int(query.get("offset", "0"), "offset")
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


async def get_incident(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    incident = await daemon.store.incident(request.match_info["id"])
    if incident is None:
        raise ApiError(404, "no such incident")
    incident["jobs"] = [job_json(j) for j in incident["jobs"]]
    incident["stacks"] = [stack_json(s, daemon.clock()) for s in incident["stacks"]]
    for item in incident["deliveries"]:
        item["received_at"] = _iso(item["received_at"])
    return web.json_response(incident)


async def list_stacks(request: web.Request) -> web.Response:
    """Live burner stacks from the store, reconciled with the backend (`?reconcile=false` skips that).

    The backend's listing is at most RECONCILE_INTERVAL seconds old, and concurrent requests share
    one: each listing starts processes, and this endpoint needs no token."""
    daemon = request.app[DAEMON]
    records = await daemon.store.list_stacks()
    stacks = [stack_json(r, daemon.clock()) for r in records]
    if request.query.get("reconcile", "true").lower() != "false":
        projects = {p.project: p.program for p in daemon.playbook_order} | {
            r.project: r.program for r in records
        }
        for project, program in sorted(projects.items()):
            try:
                in_backend = set(await request.app[LISTINGS].stacks(daemon.ops, project, program))
            except StackError as e:
                raise ApiError(503, f"cannot list the backend's stacks: {e.message}") from None
            for item in stacks:
                if item["project"] == project:
                    item["in_backend"] = item["stack"] in in_backend
                    in_backend.discard(item["stack"])
            stacks += [
                {
                    "project": project,
                    "stack": name,
                    "status": "unknown to the store",
                    "in_backend": True,
                }
                for name in sorted(in_backend)
            ]
    return web.json_response({"stacks": stacks})


async def decide_job(request: web.Request) -> web.Response:
    """POST /jobs/{id}/approve or /reject: decide a job waiting in `awaiting_approval`."""
    daemon = request.app[DAEMON]
    require_token(request, daemon.credentials.api_token)
    job_id = _job_id(request)
    approve = request.match_info["decision"] == "approve"
    job = await daemon.store.decide(job_id, approve, daemon.clock(), "rejected by request")
    if job is None:
        raise ApiError(404, "no such job")
    expected = JobStatus.QUEUED if approve else JobStatus.REJECTED
    if job.status != expected:
        raise ApiError(409, f"job is {job.status.value}, not awaiting approval")
    log.info("job.approved" if approve else "job.rejected", job_id=job_id)
    daemon.runner.notify()
    return web.json_response(job_json(job))


async def cancel_job(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    require_token(request, daemon.credentials.api_token)
    job_id = _job_id(request)
    job = await daemon.runner.cancel(job_id)
    if job is None:
        raise ApiError(404, "no such job")
    if job.status.final and job.status != JobStatus.CANCELLED:
        raise ApiError(409, f"job already {job.status.value}")
    log.info("job.cancel_requested", job_id=job_id, status=job.status.value)
    return web.json_response(job_json(job), status=202 if job.status == JobStatus.RUNNING else 200)


def stack_json(record: StackRecord, now: float) -> dict[str, Any]:
    return {
        "project": record.project,
        "stack": record.stack,
        "incident_id": record.incident_id,
        "incident_status": record.incident_status or None,
        "playbook": record.playbook,
        "service": record.service or None,
        "status": record.status,
        "created_at": _iso(record.created_at),
        "age_seconds": round(now - record.created_at, 1),
        "last_activity_at": _iso(record.last_activity_at),
        "last_operation": record.last_operation,
        "outputs": record.outputs,  # masked when stored
        "export_path": record.export_path,
        "idle_ttl": record.idle_ttl,
        "max_age": record.max_age,
    }


async def list_playbooks(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    return web.json_response(
        {
            "playbooks": [
                {
                    "name": p.name,
                    "doc": p.doc,
                    "triggers": [t.describe() for t in p.triggers],
                    "project": p.project,
                    "file": str(p.file) if p.file else None,
                }
                for p in daemon.playbook_order
            ]
        }
    )


async def run_playbook(request: web.Request) -> web.Response:
    """Run a playbook by hand with a synthetic event; `?wait=SECONDS` waits for its outputs."""
    daemon = request.app[DAEMON]
    require_token(request, daemon.credentials.api_token)
    name = request.match_info["name"]
    # Only the operator's playbooks: responder's own (reap_stack) run from the lifecycle, after
    # the gates a hand-made job would skip.
    playbook = next((p for p in daemon.playbook_order if p.name == name), None)
    if playbook is None:
        raise ApiError(404, f"no playbook named {name!r}")
    wait = _float(request.query.get("wait", "0"), "wait")
    body = await request.read()
    try:
        options = decode_json(body) if body.strip() else {}
    except InvalidJson as e:
        raise ApiError(400, str(e)) from None
    if not isinstance(options, dict):
        raise ApiError(400, "body must be a JSON object")
    params = options.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise ApiError(400, "params must be an object of strings")
    undeclared = sorted(set(params) - set(playbook.params))
    if undeclared:
        raise ApiError(400, _undeclared(playbook.name, undeclared, playbook.params))
    run_id = uuid.uuid4().hex[:12]
    incident_id = options.get("incident_id") or f"manual-{run_id}"
    if not isinstance(incident_id, str):
        raise ApiError(400, "incident_id must be a string")
    event = Event(
        id=f"manual-{run_id}",
        source="manual",
        type=f"manual.{playbook.name}",
        resource_type="manual",
        occurred_at=_iso(daemon.clock()) or "",
        incident=Incident(id=incident_id, title=f"manual run of {playbook.name}"),
    )
    structlog.contextvars.bind_contextvars(
        delivery_id=event.id, event_id=event.id, incident_id=incident_id, playbook=playbook.name
    )
    [enqueued] = await enqueue(
        deps(daemon), body, [Arrival(event.id, event)], run=Run([playbook], params)
    )
    job_id = enqueued.job_ids[0]
    if wait <= 0:
        return web.json_response({"job": job_id, "status": "queued"}, status=202)
    final = await _wait_for_job(daemon.store, job_id, min(wait, MAX_WAIT_SECONDS))
    if final is None:
        return web.json_response(
            {"job": job_id, "status": "running", "error": "still running after wait"}, status=202
        )
    return web.json_response(job_json(final))  # a failed job is still a complete answer


async def _wait_for_job(store: Store, job_id: int, seconds: float) -> Job | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        job = await store.get_job(job_id)
        if job is not None and job.status.final:
            return job
        await asyncio.sleep(0.2)
    return None


def job_json(job: Job, *, steps: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
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
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "outputs": job.outputs,  # masked when stored
        "error": job.error,
        "coalesced_into": job.coalesced_into,
        "plan": job.plan,
    }
    if steps:
        data["steps"] = [
            {
                "step": s.step,
                "started_at": _iso(s.started_at),
                "duration_ms": s.duration_ms,
                "outcome": s.outcome,
                "error": s.error,
                "changes": s.changes,
            }
            for s in job.steps
        ]
    return data


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def _job_id(request: web.Request) -> int:
    return _int(request.match_info["id"], "job id")


def _int(raw: str, name: str, *, low: int = 0) -> int:
    """ASCII digits only (int() also takes signs, `_` and other scripts' digits), within what
    the store can hold."""
    value = int(raw) if _DIGITS.fullmatch(raw) else -1
    if not low <= value <= MAX_ID:
        raise ApiError(400, f"{name} must be a whole number from {low} to {MAX_ID}")
    return value


def _float(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number of seconds") from None
    if math.isnan(value):
        raise ApiError(400, f"{name} must be a number of seconds")
    return max(0.0, value)


def _undeclared(playbook: str, names: list[str], declared: tuple[str, ...]) -> str:
    shown = ", ".join(quoted(n) for n in names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    accepted = ", ".join(declared) if declared else "none"
    return (
        f"playbook {playbook!r} does not declare the params {shown}{more} (it accepts: {accepted})"
    )


@dataclass
class _Listing:
    task: "asyncio.Task[list[str]]"
    ended: float = math.inf  # loop time when the listing ended


class BackendListings:
    """The backend's stacks of each project, listed at most once per `interval` seconds; requests
    arriving while a listing runs wait for that one instead of starting another."""

    def __init__(self, interval: float = RECONCILE_INTERVAL) -> None:
        self.interval = interval
        self._listings: dict[str, _Listing] = {}

    async def stacks(self, ops: StackOperations, project: str, program: str) -> list[str]:
        loop = asyncio.get_running_loop()
        listing = self._listings.get(project)
        if listing is None or loop.time() >= listing.ended + self.interval:
            listing = _Listing(asyncio.create_task(ops.list_stacks(project, program)))
            listing.task.add_done_callback(lambda task: self._ended(listing, task))
            self._listings[project] = listing
        # A client that goes away cancels its own wait, not the listing the others share.
        return await asyncio.shield(listing.task)

    def _ended(self, listing: _Listing, task: "asyncio.Task[list[str]]") -> None:
        listing.ended = asyncio.get_running_loop().time()
        if not task.cancelled():
            task.exception()  # a failure is cached and answered too; retrieved here for asyncio

    async def close(self, _app: web.Application) -> None:
        tasks = [listing.task for listing in self._listings.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


LISTINGS = web.AppKey("backend_listings", BackendListings)


def setup(app: web.Application) -> None:
    app[LISTINGS] = listings = BackendListings()
    app.on_shutdown.append(listings.close)
    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/jobs", list_jobs)
    app.router.add_get("/jobs/{id}", get_job)
    app.router.add_get("/incidents/{id}", get_incident)
    app.router.add_get("/playbooks", list_playbooks)
    app.router.add_post("/playbooks/{name}/run", run_playbook)
    app.router.add_get("/stacks", list_stacks)
    app.router.add_post("/jobs/{id}/{decision:approve|reject}", decide_job)
    app.router.add_post("/jobs/{id}/cancel", cancel_job)
