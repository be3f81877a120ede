"""Prometheus Alertmanager `webhook_config` notifications (version 4): one event per alert.

A firing alert becomes `incident.triggered`, a resolved one `incident.resolved`; the incident is the
alert (its fingerprint within its group), so the same playbooks answer Alertmanager too.
"""

import hashlib
from collections.abc import Mapping
from typing import Any

from responder.events import Event, Incident, Link, Reference
from responder.sources import Arrival, Delivery, InvalidDelivery, Unauthorized
from responder.sources.parsing import (
    bearer_matches,
    decode_json,
    json_type,
    optional,
    quoted,
    string_map,
    text,
)

SOURCE = "alertmanager"
STATUSES = {"firing": "incident.triggered", "resolved": "incident.resolved"}
MAX_FINGERPRINT = 64  # Alertmanager's are 16 hex digits
# An alert's times are RFC 3339 (about 30 characters); its start is part of its event's id.
MAX_TIMESTAMP = 64
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="responder"'}


def from_http(headers: Mapping[str, str], body: bytes, token: str) -> Delivery:
    """The delivery of one notification, sent with `Authorization: Bearer <token>`: one event per
    alert, the body stored once. Raise `Unauthorized` or `InvalidDelivery`."""
    if not bearer_matches(headers.get("Authorization", ""), token):
        raise Unauthorized(
            "missing or wrong bearer token",
            reason="missing or wrong bearer token",
            headers=CHALLENGE,
        )
    events = parse(body)
    return Delivery(body, tuple(Arrival(e.id, e, updates_need_open_incident=True) for e in events))


def parse(body: bytes) -> list[Event]:
    document = decode_json(body)
    if not isinstance(document, dict):
        raise InvalidDelivery("not an Alertmanager notification: expected a JSON object")
    if document.get("version") != "4":
        raise InvalidDelivery(
            f'unsupported notification version {quoted(document.get("version"))} (expected "4")'
        )
    group_key = document.get("groupKey")
    if not isinstance(group_key, str):
        raise InvalidDelivery(f"groupKey must be a string, not {json_type(group_key)}")
    alerts = document.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise InvalidDelivery("alerts must be a non-empty list")
    _status(document.get("status"), "status", required=False)
    for key in ("receiver", "externalURL"):
        text(document, key, "")
    optional(document, "truncatedAlerts", "", int, 0)
    for key in ("groupLabels", "commonAnnotations"):
        string_map(document.get(key), key)
    common = string_map(document.get("commonLabels"), "commonLabels")
    return [_event(alert, i, group_key, common, document) for i, alert in enumerate(alerts)]


def incident_id(group_key: str, fingerprint: str) -> str:
    group = hashlib.sha256(group_key.encode()).hexdigest()[:8]
    return f"am-{group}-{fingerprint}"


def _timestamp(alert: dict[str, Any], key: str, where: str) -> str:
    value = text(alert, key, where)
    if len(value) > MAX_TIMESTAMP:
        raise InvalidDelivery(
            f"{where}.{key} must be a timestamp of at most {MAX_TIMESTAMP} characters,"
            f" not {quoted(value)}"
        )
    return value


def _status(value: Any, where: str, *, required: bool) -> str:
    if (value is None and not required) or (isinstance(value, str) and value in STATUSES):
        return value or ""
    raise InvalidDelivery(f"{where} must be firing or resolved, not {quoted(value)}")


def _event(
    alert: Any, index: int, group_key: str, common: dict[str, str], document: dict[str, Any]
) -> Event:
    where = f"alerts[{index}]"
    if not isinstance(alert, dict):
        raise InvalidDelivery(f"{where} must be an object, not {json_type(alert)}")
    status = _status(alert.get("status"), f"{where}.status", required=True)
    labels = alert.get("labels")
    if labels is None:
        raise InvalidDelivery(f"{where}.labels must be an object of strings")
    labels = string_map(labels, f"{where}.labels")
    fingerprint = alert.get("fingerprint")
    if (
        not isinstance(fingerprint, str)
        or not (fingerprint.isascii() and fingerprint.isalnum())
        or len(fingerprint) > MAX_FINGERPRINT
    ):
        raise InvalidDelivery(
            f"{where}.fingerprint must be an alphanumeric string of at most {MAX_FINGERPRINT}"
            f" characters, not {quoted(fingerprint)}"
        )
    annotations = string_map(alert.get("annotations"), f"{where}.annotations")
    starts_at, ends_at = (_timestamp(alert, key, where) for key in ("startsAt", "endsAt"))
    generator_url = text(alert, "generatorURL", where)
    external_url = text(document, "externalURL", "")
    links = ((generator_url, "alert source"), (external_url, "Alertmanager"))
    name = labels.get("alertname", "")
    service = labels.get("service") or labels.get("job") or ""
    severity = labels.get("severity", "")
    incident = Incident(
        id=incident_id(group_key, fingerprint),
        title=annotations.get("summary") or annotations.get("description") or name,
        status="resolved" if status == "resolved" else "triggered",
        urgency="high" if severity in ("critical", "page", "error") else "low" if severity else "",
        service=Reference(id=service, type="service", summary=service) if service else None,
        incident_key=fingerprint,
        html_url=generator_url,
        created_at=starts_at,
        severity=severity,
        labels={**common, **labels},
        links=tuple(Link(href, name) for href, name in links if href),
    )
    return Event(
        id=f"{incident.id}:{status}:{starts_at}",
        source=SOURCE,
        type=STATUSES[status],
        resource_type="incident",
        occurred_at=ends_at if status == "resolved" else starts_at,
        client={"name": "Alertmanager", "url": document.get("externalURL")},
        incident=incident,
        data={"alert": alert, "receiver": document.get("receiver"), "groupKey": group_key},
    )
