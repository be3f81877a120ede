"""Webhook endpoints: verify and parse each source's deliveries, then hand them to intake."""

import hashlib
import hmac

import structlog
from aiohttp import web

from responder.logs import get_logger
from responder.sources import InvalidPayload, alertmanager, events_v2, pagerduty
from responder.sources.parsing import quoted
from responder.web import intake
from responder.web.auth import require_token
from responder.web.daemon import DAEMON, Daemon
from responder.web.errors import ApiError

log = get_logger("responder.webhooks")

MAX_DELIVERY_ID = 128  # PagerDuty's X-Webhook-Id is a 36-character UUID


def delivery_id_header(request: web.Request) -> str:
    """The X-Webhook-Id header ("" without one). It is unsigned, and aiohttp decodes header bytes
    with surrogateescape, so anything but short printable ASCII is refused before it goes anywhere."""
    value = request.headers.get(pagerduty.WEBHOOK_ID_HEADER, "").strip()
    if not value.isascii() or not value.isprintable() or len(value) > MAX_DELIVERY_ID:
        log.warning("delivery.rejected", reason="malformed webhook id header")
        raise ApiError(
            400,
            f"{pagerduty.WEBHOOK_ID_HEADER} must be printable ASCII of at most"
            f" {MAX_DELIVERY_ID} characters",
        )
    return value


def refuse_content_encoding(request: web.Request) -> None:
    """Pagers never compress their webhooks; a compressed body would be a decompression bomb to us
    (the app reads bodies raw: `auto_decompress` is off), so anything but identity is a 415."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        log.warning("delivery.rejected", reason="unsupported content encoding")
        raise ApiError(415, f"Content-Encoding {quoted(encoding)} is not accepted; send identity")


async def read_json_body(request: web.Request, daemon: Daemon) -> bytes:
    """The raw body, after the checks every JSON webhook shares (415, 413, 503 while stopping)."""
    if not daemon.accepting:
        raise ApiError(503, "shutting down; retry later", {"Retry-After": "5"})
    if request.content_type != "application/json":
        content_type = quoted(request.content_type)
        log.warning(
            "delivery.rejected", reason="unsupported content type", content_type=content_type
        )
        raise ApiError(415, f"content type must be application/json, not {content_type}")
    refuse_content_encoding(request)
    limit = daemon.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        log.warning("delivery.rejected", reason="body too large", bytes=request.content_length)
        raise ApiError(413, f"body exceeds {limit} bytes")
    body = await request.read()  # aiohttp enforces client_max_size for chunked bodies
    log.info("delivery.received", bytes=len(body))
    return body


async def pagerduty_v3(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    structlog.contextvars.bind_contextvars(source=pagerduty.SOURCE)
    header_id = delivery_id_header(request)
    structlog.contextvars.bind_contextvars(delivery_id=header_id or None)
    body = await read_json_body(request, daemon)
    if daemon.settings.verify_signatures:
        signature = request.headers.get(pagerduty.SIGNATURE_HEADER)
        if not pagerduty.verify_signature(body, signature, daemon.credentials.pagerduty_secrets):
            reason = "missing signature" if not signature else "signature does not match"
            log.warning("delivery.rejected", reason=reason)
            raise ApiError(401, f"{reason} ({pagerduty.SIGNATURE_HEADER})")
        log.info("delivery.verified")
    try:
        event = pagerduty.parse(body)
    except InvalidPayload as e:
        log.warning("delivery.rejected", reason=str(e))
        raise ApiError(400, str(e)) from None
    # X-Webhook-Id is stable across retries, the event id too; the store dedupes on both, so a
    # captured body replayed under new webhook ids creates nothing.
    delivery_id = header_id or event.id
    structlog.contextvars.bind_contextvars(
        delivery_id=delivery_id,
        event_id=event.id,
        event_type=event.type,
        incident_id=event.incident_id or None,
    )
    [result] = await intake.record(daemon, body, [intake.Arrival(delivery_id, event)])
    return intake.answer(result)


def setup(app: web.Application) -> None:
    app.router.add_post("/webhooks/pagerduty", pagerduty_v3)
    app.router.add_post("/v2/enqueue", events_v2_enqueue)
    app.router.add_post("/webhooks/alertmanager", alertmanager_webhook)


async def events_v2_enqueue(request: web.Request) -> web.Response:
    """PagerDuty Events API v2, answered as PagerDuty answers (so its clients need no changes)."""
    daemon = request.app[DAEMON]
    structlog.contextvars.bind_contextvars(source=events_v2.SOURCE)
    try:
        body = await read_json_body(request, daemon)
    except ApiError as e:
        if e.status == 415:  # PagerDuty answers a non-JSON content type as an invalid event
            raise _invalid_event(400, [e.message]) from None
        raise
    try:
        enqueued = events_v2.parse(body)
    except events_v2.InvalidEvent as e:
        log.warning("delivery.rejected", reason="invalid event", errors=e.errors)
        raise _invalid_event(400, e.errors) from None
    if not any(
        hmac.compare_digest(enqueued.routing_key.encode(), k.encode())
        for k in daemon.credentials.events_v2_routing_keys
    ):
        log.warning("delivery.rejected", reason="unknown routing key")
        raise _invalid_event(
            401, ["'routing_key' is not a configured integration key"], "Unknown routing key"
        )
    event = enqueued.event
    structlog.contextvars.bind_contextvars(delivery_id=event.id)
    log.info("delivery.verified")
    arrival = intake.Arrival(
        event.id,
        event,
        updates_need_open_incident=True,
        dedupe_key="ev2-" + hashlib.sha256(body).hexdigest(),
        dedupe_window=events_v2.REDELIVERY_WINDOW,
    )
    try:
        await intake.record(daemon, body, [arrival])
    except ApiError as e:
        if e.status == 400:  # the store refused a value: answered in the Events API's shape
            raise _invalid_event(400, [e.message]) from None
        raise
    return web.json_response(
        {"status": "success", "message": "Event processed", "dedup_key": enqueued.dedup_key},
        status=202,
    )


def _invalid_event(
    status: int, errors: list[str], message: str = "Event object is invalid"
) -> ApiError:
    return ApiError(
        status, message, body={"status": "invalid event", "message": message, "errors": errors}
    )


async def alertmanager_webhook(request: web.Request) -> web.Response:
    """Alertmanager `webhook_configs` notifications, authenticated with a bearer token."""
    daemon = request.app[DAEMON]
    structlog.contextvars.bind_contextvars(source=alertmanager.SOURCE)
    try:
        require_token(request, daemon.credentials.alertmanager_token)
    except ApiError:
        log.warning("delivery.rejected", reason="missing or wrong bearer token")
        raise
    body = await read_json_body(request, daemon)
    try:
        events = alertmanager.parse(body)
    except InvalidPayload as e:
        log.warning("delivery.rejected", reason=str(e))
        raise ApiError(400, str(e)) from None
    log.info("delivery.verified", alerts=len(events))
    # One transaction for the whole notification: every alert's jobs are committed before the 202,
    # and the body is stored once, not once per alert.
    arrivals = [intake.Arrival(e.id, e, updates_need_open_incident=True) for e in events]
    results = await intake.record(daemon, body, arrivals)
    return web.json_response(
        {
            "status": "accepted",
            "alerts": [
                {
                    "incident_id": r.event.incident_id,
                    "event_type": r.event.type,
                    "status": r.status,
                    "jobs": r.job_ids,
                }
                for r in results
            ],
        },
        status=202,
    )
