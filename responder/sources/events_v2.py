"""PagerDuty Events API v2 (`POST /v2/enqueue`): validation with PagerDuty's error shapes, and parsing.

Events normalise into the same incident model as V3 webhooks: `trigger` → `incident.triggered`,
`acknowledge` → `incident.acknowledged`, `resolve` → `incident.resolved`, the incident keyed by
routing key and `dedup_key`, so the same playbooks answer whichever pager sent the alert.
"""

import datetime
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from responder.events import Event, Incident, Reference

SOURCE = "events_v2"
ACTIONS = {
    "trigger": "incident.triggered",
    "acknowledge": "incident.acknowledged",
    "resolve": "incident.resolved",
}
SEVERITIES = ("critical", "error", "warning", "info")
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


class InvalidEvent(ValueError):
    """The event breaks the API's rules; `errors` names each bad field, as PagerDuty does."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class EnqueuedEvent:
    routing_key: str
    dedup_key: str
    event: Event


def parse(body: bytes) -> EnqueuedEvent:
    """Validate and parse one event; raise `InvalidEvent` with every problem found."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidEvent([f"Invalid JSON: {e}"]) from None
    if not isinstance(document, dict):
        raise InvalidEvent(["Event must be a JSON object"])
    errors: list[str] = []
    routing_key = document.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        errors.append("'routing_key' is missing or blank")
    elif len(routing_key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    elif not routing_key.isalnum():
        errors.append("'routing_key' cannot contain non-alphanumeric characters.")
    action = document.get("event_action")
    if action not in ACTIONS:
        errors.append(f"'event_action' is invalid (must be one of {', '.join(ACTIONS)})")
    dedup_key = document.get("dedup_key")
    if dedup_key is not None and (
        not isinstance(dedup_key, str) or not dedup_key or len(dedup_key) > MAX_DEDUP_KEY
    ):
        errors.append(
            f"'dedup_key' must be a non-empty string of at most {MAX_DEDUP_KEY} characters"
        )
    elif dedup_key is None and action in ("acknowledge", "resolve"):
        errors.append(f"'dedup_key' is required for event_action '{action}'")
    payload = document.get("payload")
    if action == "trigger" or payload is not None:
        errors += _payload_errors(payload, required=action == "trigger")
    errors += _list_errors(document.get("links"), "links", "href")
    errors += _list_errors(document.get("images"), "images", "src")
    for key in ("client", "client_url"):
        if key in document and not isinstance(document[key], str):
            errors.append(f"'{key}' must be a string")
    if errors:
        raise InvalidEvent(errors)
    assert isinstance(routing_key, str) and isinstance(action, str)
    if dedup_key is None:
        dedup_key = uuid.uuid4().hex  # as PagerDuty does for a trigger without one
    return EnqueuedEvent(
        routing_key, dedup_key, _event(document, routing_key, dedup_key, action, payload or {})
    )


def _payload_errors(payload: Any, *, required: bool) -> list[str]:
    if not isinstance(payload, dict):
        return (
            ["'payload' is missing or not an object"]
            if required
            else ["'payload' must be an object"]
        )
    errors = []
    summary = payload.get("summary")
    if required and (not isinstance(summary, str) or not summary.strip()):
        errors.append("'payload.summary' is missing or blank")
    elif isinstance(summary, str) and len(summary) > MAX_SUMMARY:
        errors.append(
            f"'payload.summary' is too long (at most {MAX_SUMMARY} characters, got {len(summary)})"
        )
    source = payload.get("source")
    if required and (not isinstance(source, str) or not source.strip()):
        errors.append("'payload.source' is missing or blank")
    severity = payload.get("severity")
    if (required or severity is not None) and severity not in SEVERITIES:
        errors.append(f"'payload.severity' is invalid (must be one of {', '.join(SEVERITIES)})")
    timestamp = payload.get("timestamp")
    if timestamp is not None and not _is_timestamp(timestamp):
        errors.append("'payload.timestamp' is not a valid ISO 8601 timestamp")
    for key in ("component", "group", "class"):
        if key in payload and not isinstance(payload[key], str):
            errors.append(f"'payload.{key}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict | str):
        errors.append("'payload.custom_details' must be an object")
    return errors


def _list_errors(items: Any, name: str, required_key: str) -> list[str]:
    if items is None:
        return []
    if not isinstance(items, list):
        return [f"'{name}' must be a list"]
    return [
        f"'{name}[{i}].{required_key}' is missing"
        for i, item in enumerate(items)
        if not isinstance(item, dict)
        or not isinstance(item.get(required_key), str)
        or not item[required_key]
    ]


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        # PagerDuty's own example uses a +0000 offset, which fromisoformat accepts from 3.11.
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def incident_id(routing_key: str, dedup_key: str) -> str:
    """Alerts dedupe per routing key and dedup_key, so that pair names the incident (without the key)."""
    digest = hashlib.sha256(f"{routing_key}\0{dedup_key}".encode()).hexdigest()[:20]
    return f"ev2-{digest}"


def _event(
    document: dict[str, Any], routing_key: str, dedup_key: str, action: str, payload: dict[str, Any]
) -> Event:
    severity = payload.get("severity") or ""
    details = payload.get("custom_details")
    labels = {
        k: str(payload[k]) for k in ("source", "component", "group", "class") if payload.get(k)
    }
    if isinstance(details, dict):
        labels.update({str(k): v for k, v in details.items() if isinstance(v, str)})
    source = str(payload.get("source") or "")
    incident = Incident(
        id=incident_id(routing_key, dedup_key),
        title=str(payload.get("summary") or ""),
        status=ACTIONS[action].rpartition(".")[2],
        urgency="high" if severity in ("critical", "error") else "low" if severity else "",
        service=Reference(id=source, type="source", summary=source) if source else None,
        incident_key=dedup_key,
        severity=severity,
        labels=labels,
    )
    data: dict[str, Any] = {
        k: document[k]
        for k in ("payload", "links", "images", "client", "client_url")
        if k in document
    }
    return Event(
        id=f"{incident.id}:{uuid.uuid4().hex[:12]}",
        source=SOURCE,
        type=ACTIONS[action],
        resource_type="incident",
        occurred_at=str(payload.get("timestamp") or ""),
        client={"name": document["client"]} if isinstance(document.get("client"), str) else None,
        incident=incident,
        data=data,
    )
