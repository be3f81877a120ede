"""Prometheus Alertmanager `webhook_config` notifications (version 4): one event per alert.

A firing alert becomes `incident.triggered`, a resolved one `incident.resolved`; the incident is the
alert (its fingerprint within its group), so the same playbooks answer Alertmanager too.
"""

import hashlib
import json
from typing import Any

from responder.events import Event, Incident, Reference
from responder.sources import InvalidPayload

SOURCE = "alertmanager"
STATUSES = {"firing": "incident.triggered", "resolved": "incident.resolved"}


def parse(body: bytes) -> list[Event]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidPayload(f"body is not valid JSON: {e}") from None
    if not isinstance(document, dict):
        raise InvalidPayload("not an Alertmanager notification: expected a JSON object")
    if document.get("version") != "4":
        raise InvalidPayload(
            f'unsupported notification version {document.get("version")!r} (expected "4")'
        )
    group_key = document.get("groupKey")
    if not isinstance(group_key, str):
        raise InvalidPayload("groupKey must be a string")
    alerts = document.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise InvalidPayload("alerts must be a non-empty list")
    common = {k: v for k, v in (document.get("commonLabels") or {}).items() if isinstance(v, str)}
    return [_event(alert, i, group_key, common, document) for i, alert in enumerate(alerts)]


def incident_id(group_key: str, fingerprint: str) -> str:
    group = hashlib.sha256(group_key.encode()).hexdigest()[:8]
    return f"am-{group}-{fingerprint}"


def _event(
    alert: Any, index: int, group_key: str, common: dict[str, str], document: dict[str, Any]
) -> Event:
    where = f"alerts[{index}]"
    if not isinstance(alert, dict):
        raise InvalidPayload(f"{where} must be an object")
    status = alert.get("status")
    if status not in STATUSES:
        raise InvalidPayload(f"{where}.status must be firing or resolved, not {status!r}")
    labels = alert.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidPayload(f"{where}.labels must be an object of strings")
    fingerprint = alert.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint.isalnum():
        raise InvalidPayload(f"{where}.fingerprint must be an alphanumeric string")
    annotations: dict[str, Any] = (
        alert["annotations"] if isinstance(alert.get("annotations"), dict) else {}
    )
    name = labels.get("alertname", "")
    service = labels.get("service") or labels.get("job") or ""
    title = str(annotations.get("summary") or annotations.get("description") or name)
    severity = labels.get("severity", "")
    incident = Incident(
        id=incident_id(group_key, fingerprint),
        title=title,
        status="resolved" if status == "resolved" else "triggered",
        urgency="high" if severity in ("critical", "page", "error") else "low" if severity else "",
        service=Reference(id=service, type="service", summary=service) if service else None,
        incident_key=fingerprint,
        html_url=str(alert.get("generatorURL") or ""),
        created_at=str(alert.get("startsAt") or ""),
        severity=severity,
        labels={**common, **labels},
    )
    occurred = alert.get("endsAt") if status == "resolved" else alert.get("startsAt")
    return Event(
        id=f"{incident.id}:{status}:{alert.get('startsAt', '')}",
        source=SOURCE,
        type=STATUSES[status],
        resource_type="incident",
        occurred_at=str(occurred or ""),
        client={"name": "Alertmanager", "url": document.get("externalURL")},
        incident=incident,
        data={"alert": alert, "receiver": document.get("receiver"), "groupKey": group_key},
    )
