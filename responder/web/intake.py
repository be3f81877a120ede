"""What every webhook source does once its delivery is verified and parsed: match, store, answer.

The delivery and its jobs are committed in one transaction before the 2xx goes out, so an
acknowledged delivery survives a crash; a redelivery (same delivery id) creates nothing.
"""

from aiohttp import web

from responder.events import Event, event_to_dict
from responder.logs import get_logger
from responder.playbook import match
from responder.store import NewDelivery, NewJob, StoreUnavailable
from responder.web.daemon import Daemon
from responder.web.errors import ApiError

log = get_logger("responder.intake")

PING_TYPES = ("pagey.ping",)


async def accept(daemon: Daemon, delivery_id: str, body: bytes, event: Event) -> web.Response:
    matched = match(daemon.playbook_order, event)
    if event.type in PING_TYPES:
        status = "ping"
        log.info("delivery.ping")
    elif matched:
        status = "accepted"
    else:
        status = "ignored"
    log.info("delivery.matched", playbooks=[p.name for p in matched], outcome=status)
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
        log.error("delivery.store_unavailable", error=str(e))
        raise ApiError(503, "job store unavailable; retry later", {"Retry-After": "5"}) from None
    if not recorded.created:
        log.info("delivery.deduplicated")
        return web.json_response(
            {"status": "duplicate", "delivery_id": delivery_id, "event_id": event.id, "jobs": []},
            status=200,
        )
    for job_id, job in zip(recorded.job_ids, jobs, strict=True):
        log.info("job.queued", job_id=job_id, playbook=job.playbook, stack=job.stack)
    daemon.runner.notify()
    return web.json_response(
        {
            "status": status,
            "delivery_id": delivery_id,
            "event_id": event.id,
            "jobs": recorded.job_ids,
        },
        status=202,
    )
