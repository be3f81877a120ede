"""PagerDuty Webhooks V3: signature verification and envelope parsing."""

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from responder.events import Event, Incident, Reference
from responder.sources import InvalidPayload
from responder.sources.parsing import decode_json, json_type, optional, text

SOURCE = "pagerduty"
SIGNATURE_HEADER = "X-PagerDuty-Signature"
WEBHOOK_ID_HEADER = "X-Webhook-Id"
ENVELOPE_KEYS = ("id", "event_type", "resource_type", "occurred_at", "data")


def sign(body: bytes, secret: str) -> str:
    """The header entry PagerDuty sends for `body` under one secret: `v1=<hex>`."""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True when any `v1=` entry of the header matches the body under any configured secret.

    During secret rotation PagerDuty sends several comma-separated entries; one match suffices.
    Other versions are ignored, and so is an empty secret (a body signed with an empty key proves
    nothing). A header that is not ASCII matches nothing. Every comparison is constant-time.
    """
    keys = [secret for secret in secrets if secret]
    if not header or not keys or not header.isascii():
        return False
    offered = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    expected = [sign(body, key)[3:] for key in keys]
    matched = False
    for candidate in offered:
        for digest in expected:
            # No early exit: the time taken does not depend on which entry matched.
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    return matched


def parse(body: bytes) -> Event:
    """Parse a V3 envelope into an `Event`; raise `InvalidPayload` naming what is wrong."""
    document = decode_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("event"), dict):
        raise InvalidPayload(
            'not a PagerDuty V3 webhook: expected an object with an "event" object'
        )
    event = document["event"]
    missing = [key for key in ENVELOPE_KEYS if key not in event]
    if missing:
        raise InvalidPayload(f"not a PagerDuty V3 webhook: event is missing {', '.join(missing)}")
    for key in ("id", "event_type", "resource_type"):
        if not isinstance(event[key], str) or not event[key]:
            raise InvalidPayload(f"event.{key} must be a non-empty string")
    data = event["data"]
    if not isinstance(data, dict):
        raise InvalidPayload(f"event.data must be an object, not {json_type(data)}")
    return Event(
        id=event["id"],
        source=SOURCE,
        type=event["event_type"],
        resource_type=event["resource_type"],
        occurred_at=text(event, "occurred_at", "event"),
        agent=_reference(event, "agent", "event"),
        client=optional(event, "client", "event", dict, None),
        incident=_incident(data),
        data=data,
    )


def _incident(data: dict[str, Any]) -> Incident | None:
    """The incident an event is about: the data itself, or the reference inside a note/responder/..."""
    if data.get("type") == "incident":
        return _full_incident(data)
    ref = _reference(data, "incident", "event.data")
    if ref is None:
        return None
    return Incident(id=ref.id, title=ref.summary, html_url=ref.html_url)


def _full_incident(data: dict[str, Any]) -> Incident:
    where = "event.data"
    if not text(data, "id", where):
        raise InvalidPayload("event.data.id is required for an incident")
    number = data.get("number")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
        raise InvalidPayload(f"event.data.number must be a whole number, not {json_type(number)}")
    return Incident(
        id=data["id"],
        title=text(data, "title", where),
        status=text(data, "status", where),
        number=number,
        urgency=text(data, "urgency", where),
        priority=_reference(data, "priority", where),
        service=_reference(data, "service", where),
        escalation_policy=_reference(data, "escalation_policy", where),
        teams=_references(data, "teams", where),
        assignees=_references(data, "assignees", where),
        incident_key=text(data, "incident_key", where),
        html_url=text(data, "html_url", where),
        created_at=text(data, "created_at", where),
    )


def _reference(document: dict[str, Any], key: str, where: str) -> Reference | None:
    """A reference object (service, user, team, ...); None when absent, null or without an id."""
    value = optional(document, key, where, dict, None)
    return None if value is None else _reference_of(value, f"{where}.{key}")


def _reference_of(value: dict[str, Any], where: str) -> Reference | None:
    ref_id = text(value, "id", where)
    if not ref_id:
        return None
    return Reference(
        id=ref_id,
        type=text(value, "type", where),
        summary=text(value, "summary", where),
        html_url=text(value, "html_url", where),
    )


def _references(document: dict[str, Any], key: str, where: str) -> tuple[Reference, ...]:
    items = optional(document, key, where, list, [])
    refs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidPayload(f"{where}.{key}[{i}] must be an object, not {json_type(item)}")
        ref = _reference_of(item, f"{where}.{key}[{i}]")
        if ref is not None:
            refs.append(ref)
    return tuple(refs)
