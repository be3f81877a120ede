"""The one way jobs enter the store: an event's delivery record and its jobs, committed, then notified.

Webhook intake, manual runs and the reaper all call `enqueue`. Each call's deliveries and jobs are
committed in one transaction before it returns, so an acknowledged delivery survives a crash; a
redelivery (see `Store.record_delivery`) creates nothing, and the incident rules
(`responder.incidents`) decide what a delivery does to its incident.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from responder import metrics
from responder.events import Event
from responder.logs import get_logger
from responder.notes.render import is_own_note
from responder.playbook import Playbook, match
from responder.sources import Arrival
from responder.store import DeliveryStatus, NewDelivery, NewJob, Store, StoreUnavailable

log = get_logger("responder.enqueue")

PING_TYPES = ("pagey.ping",)


@dataclass(frozen=True)
class Deps:
    """What enqueueing needs: the store, the playbooks events are matched against, the job options
    the operator sets, the clock, and how to wake the runner."""

    store: Store
    playbooks: list[Playbook]
    max_attempts: int
    clock: Callable[[], float]
    notify: Callable[[], None]


@dataclass(frozen=True)
class Run:
    """Jobs chosen by the caller instead of by matching: these playbooks, with these run params,
    on `stack` (project, stack) when given, else on each playbook's own stack for the event."""

    playbooks: Sequence[Playbook]
    params: Mapping[str, str] = field(default_factory=dict)
    stack: tuple[str, str] | None = None


@dataclass(frozen=True)
class Enqueued:
    delivery_id: str
    event: Event
    status: DeliveryStatus
    job_ids: list[int] = field(default_factory=list)


async def enqueue(
    deps: Deps, body: bytes, arrivals: Sequence[Arrival], *, run: Run | None = None
) -> list[Enqueued]:
    """Record the arrivals of one request and their jobs in one transaction (all or none); the body
    is stored once, however many events it holds. Jobs come from matching each event against
    `deps.playbooks`, or from `run`. Raise `StoreUnavailable` or `RecordRejected`."""
    received_at = deps.clock()
    prepared = [_prepare(deps, body, arrival, received_at, run) for arrival in arrivals]
    try:
        recorded = await deps.store.record_deliveries(
            [(delivery, jobs) for delivery, jobs in prepared]
        )
    except StoreUnavailable as e:
        log.error("delivery.store_unavailable", error=str(e))
        raise
    results = []
    for arrival, (_, jobs), outcome in zip(arrivals, prepared, recorded, strict=True):
        metrics.jobs_ended(outcome.ended)
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
        elif outcome.status == DeliveryStatus.DEDUPLICATED:
            log_.info("delivery.deduplicated", reason="incident already open")
        if outcome.created:
            log_.info(
                "delivery.matched",
                playbooks=[job.playbook for job in jobs] if outcome.job_ids else [],
                outcome=outcome.status,
            )
        for job_id, job in zip(outcome.job_ids, jobs, strict=False):
            log_.info("job.queued", job_id=job_id, playbook=job.playbook, stack=job.stack)
        results.append(
            Enqueued(arrival.delivery_id, arrival.event, outcome.status, outcome.job_ids)
        )
    if any(result.job_ids for result in results):
        deps.notify()
    return results


def _prepare(
    deps: Deps, body: bytes, arrival: Arrival, received_at: float, run: Run | None
) -> tuple[NewDelivery, list[NewJob]]:
    event = arrival.event
    if run is not None:
        playbooks, status = list(run.playbooks), DeliveryStatus.ACCEPTED
    elif event.type in PING_TYPES:
        log.info("delivery.ping", delivery_id=arrival.delivery_id, event_id=event.id)
        playbooks, status = [], DeliveryStatus.PING
    elif is_own_note(event):  # recorded, and acted on by no playbook
        log.info("delivery.own_note", delivery_id=arrival.delivery_id, event_id=event.id)
        playbooks, status = [], DeliveryStatus.IGNORED
    else:
        playbooks = match(deps.playbooks, event)
        status = DeliveryStatus.ACCEPTED if playbooks else DeliveryStatus.IGNORED
    jobs = [
        NewJob(
            playbook=p.name,
            project=run.stack[0] if run and run.stack else p.project,
            stack=run.stack[1] if run and run.stack else p.stack_name(event),
            event=event,
            max_attempts=deps.max_attempts,
            coalesce=p.coalesce,
            params=dict(run.params) if run else {},
            delay=p.delay,
            cancel_on=p.cancel_on,
        )
        for p in playbooks
    ]
    delivery = NewDelivery.of(
        event,
        id=arrival.delivery_id,
        body=body,
        received_at=received_at,
        status=status,
        updates_need_open_incident=arrival.updates_need_open_incident,
        dedupe_key=arrival.dedupe_key,
        dedupe_window=arrival.dedupe_window,
    )
    return delivery, jobs
