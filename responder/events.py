"""The typed event and incident model every source normalises into."""

from dataclasses import dataclass, field
from typing import Any

PAGERDUTY_PAGE = "PagerDuty incident"  # the text of the link to a PagerDuty incident's page


@dataclass(frozen=True)
class Reference:
    """A PagerDuty-style reference to another object (service, user, team, policy)."""

    id: str
    type: str = ""
    summary: str = ""
    html_url: str = ""


@dataclass(frozen=True)
class Link:
    """A page about the incident: the pager's incident page, the alert's graph, a runbook."""

    href: str
    text: str = ""


@dataclass(frozen=True)
class Incident:
    """The incident an event is about, the same shape from every source."""

    id: str
    title: str = ""
    status: str = ""
    number: int | None = None
    urgency: str = ""
    priority: Reference | None = None
    service: Reference | None = None
    escalation_policy: Reference | None = None
    teams: tuple[Reference, ...] = ()
    assignees: tuple[Reference, ...] = ()
    incident_key: str = ""
    html_url: str = ""
    created_at: str = ""
    severity: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    # The event only refers to the incident (a PagerDuty note carries its id, title and page): the
    # fields it leaves empty are unknown, not empty, so a playbook should not overwrite what it has.
    partial: bool = False

    @property
    def service_names(self) -> tuple[str, ...]:
        """What a trigger's `service=` matches: the service id and its name."""
        if self.service is None:
            return ()
        return tuple(x for x in (self.service.id, self.service.summary) if x)


@dataclass(frozen=True)
class Event:
    """One thing that happened, from one source. `incident` is None for non-incident events."""

    id: str
    source: str
    type: str
    resource_type: str
    occurred_at: str = ""
    agent: Reference | None = None
    client: dict[str, Any] | None = None
    incident: Incident | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def incident_id(self) -> str:
        return self.incident.id if self.incident else ""


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready form of the event, for the job store (what `dataclasses.asdict` gives, without
    its generic recursion, which showed in the intake profile)."""
    incident = event.incident
    return {
        **vars(event),
        "agent": _ref_dict(event.agent),
        "client": dict(event.client) if event.client is not None else None,
        "incident": None
        if incident is None
        else {
            **vars(incident),
            "priority": _ref_dict(incident.priority),
            "service": _ref_dict(incident.service),
            "escalation_policy": _ref_dict(incident.escalation_policy),
            "teams": [_ref_dict(t) for t in incident.teams],
            "assignees": [_ref_dict(a) for a in incident.assignees],
            "labels": dict(incident.labels),
            "links": [dict(vars(link)) for link in incident.links],
        },
    }


def _ref_dict(ref: Reference | None) -> dict[str, str] | None:
    return None if ref is None else dict(vars(ref))


def event_from_dict(data: dict[str, Any]) -> Event:
    incident = data.get("incident")
    return Event(
        id=data["id"],
        source=data["source"],
        type=data["type"],
        resource_type=data["resource_type"],
        occurred_at=data.get("occurred_at", ""),
        agent=_reference(data.get("agent")),
        client=data.get("client"),
        incident=_incident_from_dict(incident, data) if incident else None,
        data=data.get("data") or {},
    )


def _reference(data: Any) -> Reference | None:
    return Reference(**data) if data else None


def _incident_from_dict(data: dict[str, Any], event: dict[str, Any]) -> Incident:
    pagerduty = event["source"] == "pagerduty"
    links = data.get("links")
    if links is None:  # stored before incidents had links: the one page it knew, as parsed today
        text = PAGERDUTY_PAGE if pagerduty else ""
        links = [{"href": data["html_url"], "text": text}] if data.get("html_url") else []
    partial = data.get("partial")
    if partial is None:  # stored before `partial`: a PagerDuty event whose data is not the incident
        partial = pagerduty and (event.get("data") or {}).get("type") != "incident"
    return Incident(
        **{
            **data,
            "priority": _reference(data.get("priority")),
            "service": _reference(data.get("service")),
            "escalation_policy": _reference(data.get("escalation_policy")),
            "teams": tuple(Reference(**t) for t in data.get("teams") or ()),
            "assignees": tuple(Reference(**a) for a in data.get("assignees") or ()),
            "labels": dict(data.get("labels") or {}),
            "links": tuple(Link(**link) for link in links),
            "partial": bool(partial),
        }
    )
