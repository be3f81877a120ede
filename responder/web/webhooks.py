"""Webhook endpoints: verify and parse each source's deliveries, then hand them to intake."""

import structlog
from aiohttp import web

from responder.logs import get_logger
from responder.sources import InvalidPayload, pagerduty
from responder.web import intake
from responder.web.daemon import DAEMON, Daemon
from responder.web.errors import ApiError

log = get_logger("responder.webhooks")


async def read_json_body(request: web.Request, daemon: Daemon) -> bytes:
    """The raw body, after the checks every JSON webhook shares (415, 413, 503 while stopping)."""
    if not daemon.accepting:
        raise ApiError(503, "shutting down; retry later", {"Retry-After": "5"})
    if request.content_type != "application/json":
        log.warning(
            "delivery.rejected",
            reason="unsupported content type",
            content_type=request.content_type,
        )
        raise ApiError(415, f"content type must be application/json, not {request.content_type!r}")
    limit = daemon.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        log.warning("delivery.rejected", reason="body too large", bytes=request.content_length)
        raise ApiError(413, f"body exceeds {limit} bytes")
    body = await request.read()  # aiohttp enforces client_max_size for chunked bodies
    log.info("delivery.received", bytes=len(body))
    return body


async def pagerduty_v3(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    header_id = request.headers.get(pagerduty.WEBHOOK_ID_HEADER, "").strip()
    structlog.contextvars.bind_contextvars(source=pagerduty.SOURCE, delivery_id=header_id or None)
    body = await read_json_body(request, daemon)
    if daemon.settings.verify_signatures:
        signature = request.headers.get(pagerduty.SIGNATURE_HEADER)
        if not pagerduty.verify_signature(body, signature, daemon.webhook_secrets):
            reason = "missing signature" if not signature else "signature does not match"
            log.warning("delivery.rejected", reason=reason)
            raise ApiError(401, f"{reason} ({pagerduty.SIGNATURE_HEADER})")
        log.info("delivery.verified")
    try:
        event = pagerduty.parse(body)
    except InvalidPayload as e:
        log.warning("delivery.rejected", reason=str(e))
        raise ApiError(400, str(e)) from None
    delivery_id = header_id or event.id  # X-Webhook-Id is stable across retries; the event id too
    structlog.contextvars.bind_contextvars(
        delivery_id=delivery_id,
        event_id=event.id,
        event_type=event.type,
        incident_id=event.incident_id or None,
    )
    return await intake.accept(daemon, delivery_id, body, event)


def setup(app: web.Application) -> None:
    app.router.add_post("/webhooks/pagerduty", pagerduty_v3)
