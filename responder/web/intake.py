"""What every webhook source does once its delivery is verified and parsed: match, store, answer.

Each request's delivery records and jobs are committed in one transaction before any 2xx goes out,
so an acknowledged delivery survives a crash; a redelivery (see `Store.record_delivery`) creates
nothing, and a repeated trigger for an incident that is already open creates nothing either.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

from responder.events import Event, event_to_dict
from responder.logs import get_logger
from responder.playbook import Playbook, match
from responder.store import NewDelivery, NewJob, RecordRejected, StoreUnavailable
from responder.web.daemon import Daemon
from responder.web.errors import ApiError

log = get_logger("responder.intake")

PING_TYPES = ("pagey.ping",)


@dataclass(frozen=True)
class Arrival:
    """One event of a delivery, with how a repeat of it is recognised (see `NewDelivery`)."""

    delivery_id: str
    event: Event
    # Acknowledge/resolve for an incident that is unknown or already resolved are dropped, as the
    # Events API does.
    updates_need_open_incident: bool = False
    dedupe_key: str = ""
    dedupe_window: float = 0.0


@dataclass(frozen=True)
class Intake:
    delivery_id: str
    event: Event
    status: str  # accepted | ignored | ping | deduplicated | duplicate
    job_ids: list[int] = field(default_factory=list)


async def record(daemon: Daemon, body: bytes, arrivals: Sequence[Arrival]) -> list[Intake]:
    """Match and store the events of one request in one transaction (all or none); the body is
    stored once, however many events it holds."""
    prepared = [_prepare(daemon, body, arrival) for arrival in arrivals]
    try:
        recorded = await daemon.store.record_deliveries(
            [(delivery, jobs) for delivery, jobs, _ in prepared]
        )
    except StoreUnavailable as e:
        log.error("delivery.store_unavailable", error=str(e))
        raise ApiError(503, "job store unavailable; retry later", {"Retry-After": "5"}) from None
    except RecordRejected as e:
        log.warning("delivery.rejected", reason=str(e))
        raise ApiError(400, str(e)) from None
    results = []
    for arrival, (_, jobs, matched), outcome in zip(arrivals, prepared, recorded, strict=True):
        log_ = log.bind(
            delivery_id=arrival.delivery_id,
            event_id=arrival.event.id,
            event_type=arrival.event.type,
            incident_id=arrival.event.incident_id or None,
        )
        if not outcome.created:
            log_.info(
                "delivery.deduplicated",
                reason="delivery id already recorded",
                duplicate_of=outcome.duplicate_of,
            )
            results.append(Intake(arrival.delivery_id, arrival.event, "duplicate"))
            continue
        if outcome.status == "deduplicated":
            log_.info("delivery.deduplicated", reason="incident already open")
        log_.info(
            "delivery.matched",
            playbooks=[p.name for p in matched] if outcome.job_ids else [],
            outcome=outcome.status,
        )
        for job_id, job in zip(outcome.job_ids, jobs, strict=False):
            log_.info("job.queued", job_id=job_id, playbook=job.playbook, stack=job.stack)
        results.append(Intake(arrival.delivery_id, arrival.event, outcome.status, outcome.job_ids))
    if any(result.job_ids for result in results):
        daemon.runner.notify()
    return results


def _prepare(
    daemon: Daemon, body: bytes, arrival: Arrival
) -> tuple[NewDelivery, list[NewJob], list[Playbook]]:
    event = arrival.event
    if event.type in PING_TYPES:
        log.info("delivery.ping", delivery_id=arrival.delivery_id, event_id=event.id)
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
        id=arrival.delivery_id,
        body=body,
        received_at=daemon.clock(),
        status=status,
        updates_need_open_incident=arrival.updates_need_open_incident,
        dedupe_key=arrival.dedupe_key,
        dedupe_window=arrival.dedupe_window,
    )
    return delivery, jobs, matched


def answer(intake: Intake) -> web.Response:
    """The V3 webhook answer: 202 with the created jobs, or 200 for a redelivery."""
    body = {
        "status": intake.status,
        "delivery_id": intake.delivery_id,
        "event_id": intake.event.id,
        "jobs": intake.job_ids,
    }
    return web.json_response(body, status=200 if intake.status == "duplicate" else 202)
