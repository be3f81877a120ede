"""What every webhook source does once its delivery is verified and parsed: match, store, answer.

Each event's delivery record and jobs are committed in one transaction before any 2xx goes out, so
an acknowledged delivery survives a crash; a redelivery (same delivery id) creates nothing, and a
repeated trigger for an incident that is already open creates nothing either.
"""

from dataclasses import dataclass, field

from aiohttp import web

from responder.events import Event, event_to_dict
from responder.logs import get_logger
from responder.playbook import Playbook, match
from responder.store import NewDelivery, NewJob, StoreUnavailable
from responder.web.daemon import Daemon
from responder.web.errors import ApiError

log = get_logger("responder.intake")

PING_TYPES = ("pagey.ping",)
OPEN = ("triggered", "acknowledged")


@dataclass(frozen=True)
class Intake:
    delivery_id: str
    event: Event
    status: str  # accepted | ignored | ping | deduplicated | duplicate
    job_ids: list[int] = field(default_factory=list)


async def record(
    daemon: Daemon,
    delivery_id: str,
    body: bytes,
    event: Event,
    *,
    updates_need_open_incident: bool = False,
) -> Intake:
    """Match and store one event. `updates_need_open_incident`: acknowledge/resolve for an incident
    that is unknown or already resolved are dropped, as the Events API does."""
    log_ = log.bind(
        delivery_id=delivery_id,
        event_id=event.id,
        event_type=event.type,
        incident_id=event.incident_id or None,
    )
    status, matched = await _classify(daemon, event, updates_need_open_incident)
    log_.info("delivery.matched", playbooks=[p.name for p in matched], outcome=status)
    jobs = [
        NewJob(
            playbook=p.name,
            project=p.project,
            stack=p.stack_name(event),
            event=event_to_dict(event),
            max_attempts=daemon.settings.job_max_attempts,
            coalesce=p.coalesce,
            delay=p.delay,
            cancel_on=p.cancel_on,
        )
        for p in matched
    ]
    delivery = NewDelivery(
        id=delivery_id,
        source=event.source,
        event_id=event.id,
        event_type=event.type,
        incident_id=event.incident_id,
        status=status,
        body=body,
        received_at=daemon.clock(),
        incident_status=event.incident.status if event.incident else "",
    )
    try:
        recorded = await daemon.store.record_delivery(delivery, jobs)
    except StoreUnavailable as e:
        log_.error("delivery.store_unavailable", error=str(e))
        raise ApiError(503, "job store unavailable; retry later", {"Retry-After": "5"}) from None
    if not recorded.created:
        log_.info("delivery.deduplicated", reason="delivery id already recorded")
        return Intake(delivery_id, event, "duplicate")
    for job_id, job in zip(recorded.job_ids, jobs, strict=True):
        log_.info("job.queued", job_id=job_id, playbook=job.playbook, stack=job.stack)
    if jobs:
        daemon.runner.notify()
    return Intake(delivery_id, event, status, recorded.job_ids)


async def _classify(
    daemon: Daemon, event: Event, updates_need_open_incident: bool
) -> tuple[str, list[Playbook]]:
    if event.type in PING_TYPES:
        log.info("delivery.ping")
        return "ping", []
    if event.incident is not None and event.type.startswith("incident."):
        known = await _known(daemon, event.incident_id)
        if event.type == "incident.triggered" and known in OPEN:
            log.info(
                "delivery.deduplicated",
                reason=f"incident already {known}",
                incident_id=event.incident_id,
            )
            return "deduplicated", []
        if updates_need_open_incident and event.type != "incident.triggered" and known not in OPEN:
            return "ignored", []
    matched = match(daemon.playbook_order, event)
    return ("accepted" if matched else "ignored"), matched


async def _known(daemon: Daemon, incident_id: str) -> str | None:
    try:
        known = await daemon.store.known_incident(incident_id)
    except StoreUnavailable as e:
        raise ApiError(503, "job store unavailable; retry later", {"Retry-After": "5"}) from e
    return known[0] if known else None


def answer(intake: Intake) -> web.Response:
    """The V3 webhook answer: 202 with the created jobs, or 200 for a redelivery."""
    body = {
        "status": intake.status,
        "delivery_id": intake.delivery_id,
        "event_id": intake.event.id,
        "jobs": intake.job_ids,
    }
    return web.json_response(body, status=200 if intake.status == "duplicate" else 202)
