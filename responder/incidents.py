"""The rules of incidents, as pure functions: which are open, what each delivery makes of them."""

from dataclasses import dataclass

# The statuses are the store's (its records carry them); the rules about them are here.
from responder.store import DeliveryStatus, IncidentStatus, NewDelivery

OPEN = frozenset({IncidentStatus.TRIGGERED, IncidentStatus.ACKNOWLEDGED})
TRIGGER = "incident.triggered"
# The status each event type that changes an incident's status leaves it in: PagerDuty's incident
# lifecycle, which every source normalises into. Any other type (annotated, escalated, a manual
# run's) says nothing of the status.
LIFECYCLE = {
    TRIGGER: IncidentStatus.TRIGGERED,
    "incident.unacknowledged": IncidentStatus.TRIGGERED,
    "incident.reopened": IncidentStatus.TRIGGERED,
    "incident.acknowledged": IncidentStatus.ACKNOWLEDGED,
    "incident.resolved": IncidentStatus.RESOLVED,
}
# Deliveries responder makes itself (reaps, manual runs) act on an incident but are no news of it.
OWN_SOURCES = frozenset({"responder", "manual"})


def parse_status(value: str | None) -> IncidentStatus | None:
    """A recorded status; None for none, or for one no rule knows (written by an older version)."""
    return _STATUSES.get(value) if value is not None else None


_STATUSES = {status.value: status for status in IncidentStatus}


def is_open(status: IncidentStatus | None) -> bool:
    return status in OPEN


def status_after(event_type: str) -> IncidentStatus | None:
    """The status an event of this type leaves its incident in; None: the type says nothing of it."""
    return LIFECYCLE.get(event_type)


def tracks_incident(delivery: NewDelivery) -> bool:
    """Whether the delivery is a pager's news of an incident, which the incident's record follows."""
    return bool(delivery.incident_id) and delivery.source not in OWN_SOURCES


def is_repeat(event_type: str, known: IncidentStatus | None) -> bool:
    """A trigger for an incident that is already open repeats it."""
    return event_type == TRIGGER and is_open(known)


def is_dropped(delivery: NewDelivery, known: IncidentStatus | None) -> bool:
    """An update that needs an open incident and finds none is dropped (the Events API's rule)."""
    return (
        delivery.updates_need_open_incident
        and delivery.event_type != TRIGGER
        and not is_open(known)
    )


def ends_content_dedupe(known: IncidentStatus | None, after: IncidentStatus | None) -> bool:
    """A change of an incident's status ends the content dedupe of its earlier deliveries: an alert
    re-fired after a resolve, with the very same body, is a new alert."""
    return known is not None and after is not None and after != known


@dataclass(frozen=True)
class Verdict:
    """What a delivery does, given the status its incident had."""

    status: DeliveryStatus  # the delivery's recorded status
    creates_jobs: bool
    # False for a dropped delivery: as if it never came, it neither touches the incident's record
    # nor cancels any scheduled job.
    news: bool
    incident_status: IncidentStatus | None  # the status after the delivery; None: unchanged


def judge(delivery: NewDelivery, known: IncidentStatus | None) -> Verdict:
    """What a delivery that `tracks_incident` does to an incident whose status was `known`. The store
    asks in the same transaction as the insert, so two concurrent repeats cannot both pass."""
    if is_repeat(delivery.event_type, known):
        return Verdict(DeliveryStatus.DEDUPLICATED, False, news=True, incident_status=known)
    if is_dropped(delivery, known):
        return Verdict(DeliveryStatus.IGNORED, False, news=False, incident_status=None)
    return Verdict(
        delivery.status, True, news=True, incident_status=status_after(delivery.event_type)
    )
