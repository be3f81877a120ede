"""PagerDuty Webhooks V3: the webhook id, the signature, the envelope and its age, sans I/O."""

import datetime
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from responder.events import PAGERDUTY_PAGE, Event, Incident, Link, Reference
from responder.sources import Arrival, Delivery, InvalidDelivery, Unauthorized
from responder.sources.parsing import decode_json, json_type, optional, quoted, text

SOURCE = "pagerduty"
SIGNATURE_HEADER = "X-PagerDuty-Signature"
WEBHOOK_ID_HEADER = "X-Webhook-Id"
ENVELOPE_KEYS = ("id", "event_type", "resource_type", "occurred_at", "data")
MAX_DELIVERY_ID = 128  # PagerDuty's X-Webhook-Id is a 36-character UUID


def from_http(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str] | None,
    *,
    now: float,
    max_age: float,
) -> Delivery:
    """The delivery of one V3 webhook request: signed by one of `secrets` (None: not checked),
    parsed, and no older than `max_age` seconds at `now`. Raise `InvalidDelivery` or
    `Unauthorized`."""
    header_id = delivery_id_header(headers)
    if secrets is not None:
        signature = headers.get(SIGNATURE_HEADER)
        if not verify_signature(body, signature, secrets):
            reason = "missing signature" if not signature else "signature does not match"
            raise Unauthorized(f"{reason} ({SIGNATURE_HEADER})", reason=reason)
    event = parse(body)
    check_recent(event, now, max_age)
    # X-Webhook-Id is stable across retries, the event id too; the store dedupes on both, so a
    # captured body replayed under new webhook ids creates nothing.
    return Delivery(body, (Arrival(header_id or event.id, event),))


def delivery_id_header(headers: Mapping[str, str]) -> str:
    """The X-Webhook-Id header ("" without one). It is unsigned, and aiohttp decodes header bytes
    with surrogateescape, so anything but short printable ASCII is refused before it goes anywhere."""
    value = headers.get(WEBHOOK_ID_HEADER, "").strip()
    if not value.isascii() or not value.isprintable() or len(value) > MAX_DELIVERY_ID:
        raise InvalidDelivery(
            f"{WEBHOOK_ID_HEADER} must be printable ASCII of at most {MAX_DELIVERY_ID} characters"
        )
    return value


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


def check_recent(event: Event, now: float, max_age: float) -> None:
    """Refuse an event whose `occurred_at` is more than `max_age` seconds before `now`, or unreadable.

    The signature carries no timestamp, so a captured body verifies forever; only the store's record
    of its event id stops a replay, and that record is pruned after the retention period. An event
    older than that period is refused instead. `occurred_at` is inside the signed body.
    """
    try:
        occurred = datetime.datetime.fromisoformat(event.occurred_at)
    except ValueError:
        occurred = None
    if occurred is None or occurred.tzinfo is None:
        raise InvalidDelivery(
            "event.occurred_at must be an ISO 8601 timestamp with a time zone,"
            f" not {quoted(event.occurred_at)}"
        )
    age = now - occurred.timestamp()
    if age > max_age:
        raise InvalidDelivery(
            f"event.occurred_at {quoted(event.occurred_at)} is older than the retention period"
            f" ({max_age:g}s): the record of such an event may be gone, so it could be a replay"
        )


def parse(body: bytes) -> Event:
    """Parse a V3 envelope into an `Event`; raise `InvalidDelivery` naming what is wrong."""
    document = decode_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("event"), dict):
        raise InvalidDelivery(
            'not a PagerDuty V3 webhook: expected an object with an "event" object'
        )
    event = document["event"]
    missing = [key for key in ENVELOPE_KEYS if key not in event]
    if missing:
        raise InvalidDelivery(f"not a PagerDuty V3 webhook: event is missing {', '.join(missing)}")
    for key in ("id", "event_type", "resource_type"):
        if not isinstance(event[key], str) or not event[key]:
            raise InvalidDelivery(f"event.{key} must be a non-empty string")
    data = event["data"]
    if not isinstance(data, dict):
        raise InvalidDelivery(f"event.data must be an object, not {json_type(data)}")
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
    return Incident(
        id=ref.id, title=ref.summary, html_url=ref.html_url, links=_page(ref.html_url), partial=True
    )


def _page(html_url: str) -> tuple[Link, ...]:
    return (Link(html_url, PAGERDUTY_PAGE),) if html_url else ()


def _full_incident(data: dict[str, Any]) -> Incident:
    where = "event.data"
    if not text(data, "id", where):
        raise InvalidDelivery("event.data.id is required for an incident")
    number = data.get("number")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
        raise InvalidDelivery(f"event.data.number must be a whole number, not {json_type(number)}")
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
        links=_page(text(data, "html_url", where)),
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
            raise InvalidDelivery(f"{where}.{key}[{i}] must be an object, not {json_type(item)}")
        ref = _reference_of(item, f"{where}.{key}[{i}]")
        if ref is not None:
            refs.append(ref)
    return tuple(refs)
