"""PagerDuty Webhooks V3: signature verification and envelope parsing."""

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from responder.events import Event, Incident, Reference
from responder.sources import InvalidPayload

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
    Other versions are ignored. Every comparison is constant-time.
    """
    if not header or not secrets:
        return False
    offered = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    expected = [sign(body, secret)[3:] for secret in secrets]
    matched = False
    for candidate in offered:
        for digest in expected:
            # No early exit: the time taken does not depend on which entry matched.
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    return matched


def parse(body: bytes) -> Event:
    """Parse a V3 envelope into an `Event`; raise `InvalidPayload` naming what is wrong."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidPayload(f"body is not valid JSON: {e}") from None
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
        raise InvalidPayload("event.data must be an object")
    client = event.get("client")
    return Event(
        id=event["id"],
        source=SOURCE,
        type=event["event_type"],
        resource_type=event["resource_type"],
        occurred_at=str(event.get("occurred_at") or ""),
        agent=Reference.parse(event.get("agent")),
        client=client if isinstance(client, dict) else None,
        incident=_incident(data),
        data=data,
    )


def _incident(data: dict[str, Any]) -> Incident | None:
    """The incident an event is about: the data itself, or the reference inside a note/responder/..."""
    if data.get("type") == "incident":
        return _full_incident(data)
    ref = data.get("incident")
    if isinstance(ref, dict) and ref.get("id"):
        return Incident(
            id=str(ref["id"]),
            title=str(ref.get("summary") or ""),
            html_url=str(ref.get("html_url") or ""),
        )
    return None


def _full_incident(data: dict[str, Any]) -> Incident:
    if not data.get("id"):
        raise InvalidPayload("event.data.id is required for an incident")
    number = data.get("number")
    return Incident(
        id=str(data["id"]),
        title=str(data.get("title") or ""),
        status=str(data.get("status") or ""),
        number=number if isinstance(number, int) else None,
        urgency=str(data.get("urgency") or ""),
        priority=Reference.parse(data.get("priority")),
        service=Reference.parse(data.get("service")),
        escalation_policy=Reference.parse(data.get("escalation_policy")),
        teams=_references(data.get("teams")),
        assignees=_references(data.get("assignees")),
        incident_key=str(data.get("incident_key") or ""),
        html_url=str(data.get("html_url") or ""),
        created_at=str(data.get("created_at") or ""),
    )


def _references(items: Any) -> tuple[Reference, ...]:
    if not isinstance(items, list):
        return ()
    return tuple(ref for ref in map(Reference.parse, items) if ref is not None)
