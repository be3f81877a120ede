"""PagerDuty Events API v2 (`POST /v2/enqueue`), sans I/O: validation with PagerDuty's errors, the key.

Events normalise into the same incident model as V3 webhooks: `trigger` → `incident.triggered`,
`acknowledge` → `incident.acknowledged`, `resolve` → `incident.resolved`, the incident keyed by
routing key and `dedup_key`, so the same playbooks answer whichever pager sent the alert.
"""

import datetime
import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from responder.events import Event, Incident, Link, Reference
from responder.sources import Arrival, Delivery, InvalidDelivery, Unauthorized
from responder.sources.parsing import InvalidJson, Problems, decode_json, json_type

SOURCE = "events_v2"
ACTIONS = {
    "trigger": "incident.triggered",
    "acknowledge": "incident.acknowledged",
    "resolve": "incident.resolved",
}
SEVERITIES = ("critical", "error", "warning", "info")
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
ROUTING_KEY_LENGTH = 32
# Events carry no delivery id, so an identical body is taken for a redelivery, but only this long
# (seconds) and only while its incident's status is unchanged: an alert that fires again later, or
# after a resolve, with the very same body, is a new alert.
REDELIVERY_WINDOW = 300.0
REDACTED = "[secret]"  # what the stored body holds in place of the routing key


INVALID = "Event object is invalid"  # PagerDuty's answer to every invalid event, `errors` aside


class InvalidEvent(InvalidDelivery):
    """The event breaks the API's rules; `errors` names each bad field (at most `MAX_ERRORS` and a
    count of the rest), as PagerDuty does."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors), errors)


def from_http(_headers: Mapping[str, str], body: bytes, routing_keys: Sequence[str]) -> Delivery:
    """The delivery of one event, sent with one of `routing_keys`. Raise `InvalidEvent` or
    `Unauthorized`, whose messages and errors are PagerDuty's."""
    enqueued = parse(body)
    if not any(
        hmac.compare_digest(enqueued.routing_key.encode(), key.encode()) for key in routing_keys
    ):
        raise Unauthorized(
            "Unknown routing key",
            reason="unknown routing key",
            errors=["'routing_key' is not a configured integration key"],
        )
    event = enqueued.event
    arrival = Arrival(
        event.id,
        event,
        updates_need_open_incident=True,
        # The body as sent: redelivery is recognised by content, whatever is stored.
        dedupe_key="ev2-" + hashlib.sha256(body).hexdigest(),
        dedupe_window=REDELIVERY_WINDOW,
    )
    return Delivery(enqueued.stored_body, (arrival,))


@dataclass(frozen=True)
class EnqueuedEvent:
    routing_key: str
    dedup_key: str
    event: Event
    # The body to store: the routing key is a credential, so it is replaced by `REDACTED`.
    stored_body: bytes


def parse(body: bytes) -> EnqueuedEvent:
    """Validate and parse one event; raise `InvalidEvent` with every problem found."""
    try:
        document = decode_json(body)
    except InvalidJson as e:
        raise InvalidEvent([f"Invalid JSON: {e.problem}"]) from None
    if not isinstance(document, dict):
        raise InvalidEvent(["Event must be a JSON object"])
    problems = Problems()
    routing_key = document.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        problems.add("'routing_key' is missing or blank")
    elif len(routing_key) != ROUTING_KEY_LENGTH:
        problems.add("Length of 'routing_key' is incorrect (should be 32 characters)")
    elif not (routing_key.isascii() and routing_key.isalnum()):
        problems.add("'routing_key' cannot contain non-alphanumeric characters.")
    action = document.get("event_action")
    if not isinstance(action, str) or action not in ACTIONS:
        problems.add(f"'event_action' is invalid (must be one of {', '.join(ACTIONS)})")
    dedup_key = document.get("dedup_key")
    if dedup_key is not None and (
        not isinstance(dedup_key, str) or not dedup_key or len(dedup_key) > MAX_DEDUP_KEY
    ):
        problems.add(
            f"'dedup_key' must be a non-empty string of at most {MAX_DEDUP_KEY} characters"
        )
    elif dedup_key is None and action in ("acknowledge", "resolve"):
        problems.add(f"'dedup_key' is required for event_action '{action}'")
    payload = document.get("payload")
    if action == "trigger" or payload is not None:
        _check_payload(payload, problems, required=action == "trigger")
    _check_list(document.get("links"), "links", "href", ("text",), problems)
    _check_list(document.get("images"), "images", "src", ("href", "alt"), problems)
    for key in ("client", "client_url"):
        _check_string(document, key, key, problems)
    if problems:
        raise InvalidEvent(problems.messages())
    assert isinstance(routing_key, str) and isinstance(action, str)
    if dedup_key is None:
        dedup_key = uuid.uuid4().hex  # as PagerDuty does for a trigger without one
    return EnqueuedEvent(
        routing_key,
        dedup_key,
        _event(document, routing_key, dedup_key, action, payload or {}),
        orjson.dumps({**document, "routing_key": REDACTED}),
    )


def _check_payload(payload: Any, problems: Problems, *, required: bool) -> None:
    if not isinstance(payload, dict):
        problems.add(
            "'payload' is missing or not an object" if required else "'payload' must be an object"
        )
        return
    for key in ("summary", "source"):
        value = payload.get(key)
        if required and (not isinstance(value, str) or not value.strip()):
            problems.add(f"'payload.{key}' is missing or blank")
        else:
            _check_string(payload, key, f"payload.{key}", problems)
    summary = payload.get("summary")
    if isinstance(summary, str) and len(summary) > MAX_SUMMARY:
        problems.add(
            f"'payload.summary' is too long (at most {MAX_SUMMARY} characters, got {len(summary)})"
        )
    severity = payload.get("severity")
    if (required or severity is not None) and (
        not isinstance(severity, str) or severity not in SEVERITIES
    ):
        problems.add(f"'payload.severity' is invalid (must be one of {', '.join(SEVERITIES)})")
    timestamp = payload.get("timestamp")
    if timestamp is not None and not _is_timestamp(timestamp):
        problems.add("'payload.timestamp' is not a valid ISO 8601 timestamp")
    for key in ("component", "group", "class"):
        _check_string(payload, key, f"payload.{key}", problems)
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict | str):
        problems.add(f"'payload.custom_details' must be an object, not {json_type(details)}")


def _check_string(document: dict[str, Any], key: str, name: str, problems: Problems) -> None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        problems.add(f"'{name}' must be a string, not {json_type(value)}")


def _check_list(
    items: Any, name: str, required: str, optional: tuple[str, ...], problems: Problems
) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        problems.add(f"'{name}' must be a list, not {json_type(items)}")
        return
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.add(f"'{name}[{i}]' must be an object, not {json_type(item)}")
            continue
        value = item.get(required)
        if not isinstance(value, str) or not value:
            problems.add(f"'{name}[{i}].{required}' is missing")
        for key in optional:
            _check_string(item, key, f"{name}[{i}].{key}", problems)


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        # PagerDuty's own example uses a +0000 offset, which fromisoformat accepts from 3.11.
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _links(document: dict[str, Any]) -> tuple[Link, ...]:
    """The event's `links` (validated by `parse`), then its `client_url` named by its `client`."""
    links = [Link(item["href"], item.get("text") or "") for item in document.get("links") or ()]
    if document.get("client_url"):
        links.append(Link(document["client_url"], document.get("client") or ""))
    return tuple(links)


def incident_id(routing_key: str, dedup_key: str) -> str:
    """Alerts dedupe per routing key and dedup_key, so that pair names the incident (without the key)."""
    digest = hashlib.sha256(f"{routing_key}\0{dedup_key}".encode()).hexdigest()[:20]
    return f"ev2-{digest}"


def _event(
    document: dict[str, Any], routing_key: str, dedup_key: str, action: str, payload: dict[str, Any]
) -> Event:
    severity: str = payload.get("severity") or ""
    details = payload.get("custom_details")
    labels = {k: payload[k] for k in ("source", "component", "group", "class") if payload.get(k)}
    if isinstance(details, dict):
        labels.update({k: v for k, v in details.items() if isinstance(v, str)})
    source: str = payload.get("source") or ""
    incident = Incident(
        id=incident_id(routing_key, dedup_key),
        title=payload.get("summary") or "",
        status=ACTIONS[action].rpartition(".")[2],
        urgency="high" if severity in ("critical", "error") else "low" if severity else "",
        service=Reference(id=source, type="source", summary=source) if source else None,
        incident_key=dedup_key,
        severity=severity,
        labels=labels,
        links=_links(document),
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
        occurred_at=payload.get("timestamp") or "",
        client={"name": document["client"]} if isinstance(document.get("client"), str) else None,
        incident=incident,
        data=data,
    )
