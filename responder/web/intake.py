"""What every webhook source does once its delivery is verified and parsed: match, store, answer.

Each event's delivery record and jobs are committed in one transaction before any 2xx goes out, so
an acknowledged delivery survives a crash; a redelivery (same delivery id) creates nothing, and a
repeated trigger for an incident that is already open creates nothing either.
"""

from dataclasses import dataclass, field

from aiohttp import web

from responder.events import Event, event_to_dict
from responder.logs import get_logger
from responder.playbook import match
from responder.store import NewDelivery, NewJob, StoreUnavailable
from responder.web.daemon import Daemon
from responder.web.errors import ApiError

log = get_logger("responder.intake")

PING_TYPES = ("pagey.ping",)


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
    if event.type in PING_TYPES:
        log_.info("delivery.ping")
        status, matched = "ping", []
    else:
        matched = match(daemon.playbook_order, event)
        status = "accepted" if matched else "ignored"
    stored_event = event_to_dict(event)
    jobs = [
        NewJob(
            playbook=p.name,
            project=p.project,
            stack=p.stack_name(event),
            event=stored_event,
            max_attempts=daemon.settings.job_max_attempts,
            coalesce=p.coalesce,
            delay=p.delay,
            cancel_on=p.cancel_on,
        )
        for p in matched
    ]
    delivery = NewDelivery.of(
        event,
        id=delivery_id,
        body=body,
        received_at=daemon.clock(),
        status=status,
        updates_need_open_incident=updates_need_open_incident,
    )
    try:
        recorded = await daemon.store.record_delivery(delivery, jobs)
    except StoreUnavailable as e:
        log_.error("delivery.store_unavailable", error=str(e))
        raise ApiError(503, "job store unavailable; retry later", {"Retry-After": "5"}) from None
    if not recorded.created:
        log_.info("delivery.deduplicated", reason="delivery id already recorded")
        return Intake(delivery_id, event, "duplicate")
    if recorded.status == "deduplicated":
        log_.info("delivery.deduplicated", reason="incident already open")
    log_.info(
        "delivery.matched",
        playbooks=[p.name for p in matched] if recorded.job_ids else [],
        outcome=recorded.status,
    )
    for job_id, job in zip(recorded.job_ids, jobs, strict=False):
        log_.info("job.queued", job_id=job_id, playbook=job.playbook, stack=job.stack)
    if recorded.job_ids:
        daemon.runner.notify()
    return Intake(delivery_id, event, recorded.status, recorded.job_ids)


def answer(intake: Intake) -> web.Response:
    """The V3 webhook answer: 202 with the created jobs, or 200 for a redelivery."""
    body = {
        "status": intake.status,
        "delivery_id": intake.delivery_id,
        "event_id": intake.event.id,
        "jobs": intake.job_ids,
    }
    return web.json_response(body, status=200 if intake.status == "duplicate" else 202)
