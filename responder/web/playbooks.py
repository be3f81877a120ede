"""Playbook routes: the loaded playbooks, and running one by hand."""

import asyncio
import uuid

import structlog
from aiohttp import web

from responder.enqueue import Run, enqueue
from responder.events import Event, Incident
from responder.playbook import Playbook
from responder.sources import Arrival
from responder.sources.parsing import InvalidJson, decode_json, quoted
from responder.store import Job, Store
from responder.web.auth import require_token
from responder.web.daemon import DAEMON
from responder.web.errors import ApiError
from responder.web.query import seconds
from responder.web.shapes import iso, job_json
from responder.web.webhooks import deps

MAX_WAIT_SECONDS = 600
MAX_NAMED = 20  # undeclared parameters named in one error

routes = web.RouteTableDef()


@routes.get("/playbooks")
async def list_playbooks(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    return web.json_response(
        {
            "playbooks": [
                {
                    "name": p.name,
                    "doc": p.doc,
                    "triggers": [t.describe() for t in p.triggers],
                    "manual": p.manual,
                    "project": p.project,
                    "file": str(p.file) if p.file else None,
                }
                for p in daemon.playbook_order
            ]
        }
    )


@routes.post("/playbooks/{name}/run")
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
    wait = seconds(request.query.get("wait", "0"), "wait")
    body = await request.read()
    incident_id, params = _run_options(body, playbook)
    run_id = uuid.uuid4().hex[:12]
    incident_id = incident_id or f"manual-{run_id}"
    event = Event(
        id=f"manual-{run_id}",
        source="manual",
        type=f"manual.{playbook.name}",
        resource_type="manual",
        occurred_at=iso(daemon.clock()) or "",
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
    job = await _wait_for_job(daemon.store, job_id, min(wait, MAX_WAIT_SECONDS))
    # Not ended: answered with its status now (queued behind another job, awaiting approval, ...).
    if job is None or not job.status.final:
        status = job.status.value if job is not None else "queued"
        return web.json_response(
            {"job": job_id, "status": status, "error": f"still {status} after the wait"},
            status=202,
        )
    return web.json_response(job_json(job))  # a failed job is still a complete answer


def _run_options(body: bytes, playbook: Playbook) -> tuple[str, dict[str, str]]:
    """The body's incident id ("" for none) and run params, which the playbook must declare."""
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
    # Checked before defaulting: `{}`, `[]`, `0` or `false` are not "no incident id".
    incident_id = options.get("incident_id")
    if incident_id is not None and not isinstance(incident_id, str):
        raise ApiError(400, "incident_id must be a string")
    return incident_id or "", params


async def _wait_for_job(store: Store, job_id: int, wait: float) -> Job | None:
    """The job once final, or as it is when the wait ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        job = await store.get_job(job_id)
        if (job is not None and job.status.final) or loop.time() >= deadline:
            return job
        await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))


def _undeclared(playbook: str, names: list[str], declared: tuple[str, ...]) -> str:
    shown = ", ".join(quoted(n) for n in names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    accepted = ", ".join(declared) if declared else "none"
    return (
        f"playbook {playbook!r} does not declare the params {shown}{more} (it accepts: {accepted})"
    )
