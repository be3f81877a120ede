"""Webhook endpoints: one handler over a table of sources, each answered in its own shape."""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
import structlog
from aiohttp import web

from responder import metrics
from responder.enqueue import Deps, Enqueued, enqueue
from responder.logs import get_logger
from responder.sources import Delivery, alertmanager, events_v2, pagerduty
from responder.sources.parsing import quoted
from responder.web.daemon import DAEMON, Daemon
from responder.web.errors import KEPT_HEADERS, RETRY_AFTER, ApiError, api_error
from responder.web.metrics import rejection_reason

log = get_logger("responder.webhooks")


@dataclass(frozen=True)
class Source:
    """A webhook route: which source answers it, with which credentials, in which shape."""

    path: str
    name: str
    # The source's sans-I/O parser, given the daemon's credentials and clock.
    from_http: Callable[[Daemon, Mapping[str, str], bytes], Delivery]
    answer: Callable[[list[Enqueued]], web.Response]
    # The source's own error shape; None: ours (see `errors.json_errors`).
    error: Callable[[ApiError], ApiError] | None = None
    # The delivery id a source reads from the headers alone, checked before the body is read, so
    # every line of the delivery, from `delivery.received` on, carries it.
    header_delivery_id: Callable[[Mapping[str, str]], str] | None = None


def deps(daemon: Daemon) -> Deps:
    """What `enqueue` needs, from the running daemon."""
    return Deps(
        store=daemon.store,
        playbooks=daemon.playbook_order,
        max_attempts=daemon.settings.job_max_attempts,
        clock=daemon.clock,
        notify=daemon.runner.notify,
    )


async def receive(request: web.Request, source: Source) -> web.Response:
    """Read, verify and parse one delivery with its source, enqueue its events, and answer."""
    structlog.contextvars.bind_contextvars(source=source.name)
    shape = source.error
    started = time.perf_counter()
    try:
        daemon = request.app[DAEMON]
        if source.header_delivery_id is not None:
            header_id = source.header_delivery_id(request.headers)
            structlog.contextvars.bind_contextvars(delivery_id=header_id or None)
        body = await read_json_body(request, daemon)
        delivery = source.from_http(daemon, request.headers, body)
        log.info("delivery.verified", events=len(delivery.arrivals))
        if len(delivery.arrivals) == 1:
            structlog.contextvars.bind_contextvars(delivery_id=delivery.arrivals[0].delivery_id)
        results = await enqueue(deps(daemon), delivery.body, delivery.arrivals)
        metrics.delivery_stored(source.name, [r.status.value for r in results], started)
        return source.answer(results)
    except web.HTTPException as e:  # aiohttp's 413 for a chunked body over the size limit
        if e.status >= 400:
            metrics.delivery_rejected(source.name, rejection_reason(e))
        if shape is None or e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k in KEPT_HEADERS}
        raise shape(ApiError(e.status, e.text or e.reason, headers)) from None
    except Exception as e:
        metrics.delivery_rejected(source.name, rejection_reason(e))
        error = api_error(e, "delivery.rejected")
        if error is None:
            raise
        raise (shape(error) if shape is not None else error) from None


async def read_json_body(request: web.Request, daemon: Daemon) -> bytes:
    """The raw body, after the checks every JSON webhook shares (503 while stopping, 415, 413)."""
    if not daemon.accepting:
        raise ApiError(503, "shutting down; retry later", RETRY_AFTER)
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


def refuse_content_encoding(request: web.Request) -> None:
    """Pagers never compress their webhooks; a compressed body would be a decompression bomb to us
    (the app reads bodies raw: `auto_decompress` is off), so anything but identity is a 415."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        log.warning("delivery.rejected", reason="unsupported content encoding")
        raise ApiError(415, f"Content-Encoding {quoted(encoding)} is not accepted; send identity")


def _pagerduty(daemon: Daemon, headers: Mapping[str, str], body: bytes) -> Delivery:
    secrets = daemon.credentials.pagerduty_secrets if daemon.settings.verify_signatures else None
    return pagerduty.from_http(
        headers, body, secrets, now=daemon.clock(), max_age=daemon.settings.retention
    )


def _pagerduty_answer(results: list[Enqueued]) -> web.Response:
    """The V3 webhook answer: 202 with the created jobs, or 200 for a redelivery."""
    [result] = results
    body = {
        "status": result.status,
        "delivery_id": result.delivery_id,
        "event_id": result.event.id,
        "jobs": result.job_ids,
    }
    return _json_answer(body, 200 if result.status == "duplicate" else 202)


def _events_v2_answer(results: list[Enqueued]) -> web.Response:
    """As PagerDuty answers, so its clients need no changes."""
    [result] = results
    incident = result.event.incident
    dedup_key = incident.incident_key if incident else ""
    return _json_answer(
        {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, 202
    )


def _events_v2_error(error: ApiError) -> ApiError:
    """The error in the Events API's shape, `{"status", "message", "errors"}`, its headers kept.
    PagerDuty answers a non-JSON content type as an invalid event."""
    status = 400 if error.status == 415 else error.status
    message = events_v2.INVALID if status == 400 else error.message
    kind = "invalid event" if status < 500 else "unavailable"
    body = {"status": kind, "message": message, "errors": error.errors}
    return ApiError(status, message, error.headers, body)


async def events_v2_other_method(request: web.Request) -> web.Response:
    """Any method but POST: aiohttp's own 405 would not be in the Events API's shape."""
    raise _events_v2_error(
        ApiError(405, f"method {request.method} is not allowed; use POST", {"Allow": "POST"})
    )


def _alertmanager_answer(results: list[Enqueued]) -> web.Response:
    """Each alert's outcome: one transaction for the notification, its body stored once."""
    alerts = [
        {
            "incident_id": r.event.incident_id,
            "event_type": r.event.type,
            "status": r.status,
            "jobs": r.job_ids,
        }
        for r in results
    ]
    return _json_answer({"status": "accepted", "alerts": alerts}, 202)


def _json_answer(body: Mapping[str, object], status: int) -> web.Response:
    """As `web.json_response`, encoded by orjson: half its cost, on every delivery's answer
    (`json` for what orjson refuses: integers beyond 64 bits, lone surrogates)."""
    try:
        encoded = orjson.dumps(body)
    except TypeError:
        return web.json_response(body, status=status)
    return web.Response(
        body=encoded, status=status, content_type="application/json", charset="utf-8"
    )


SOURCES = (
    Source(
        "/webhooks/pagerduty",
        pagerduty.SOURCE,
        _pagerduty,
        _pagerduty_answer,
        header_delivery_id=pagerduty.delivery_id_header,
    ),
    Source(
        "/v2/enqueue",
        events_v2.SOURCE,
        lambda daemon, headers, body: events_v2.from_http(
            headers, body, daemon.credentials.events_v2_routing_keys
        ),
        _events_v2_answer,
        _events_v2_error,
    ),
    Source(
        "/webhooks/alertmanager",
        alertmanager.SOURCE,
        lambda daemon, headers, body: alertmanager.from_http(
            headers, body, daemon.credentials.alertmanager_token
        ),
        _alertmanager_answer,
    ),
)


def setup(app: web.Application) -> None:
    for source in SOURCES:

        async def handler(request: web.Request, source: Source = source) -> web.Response:
            return await receive(request, source)

        app.router.add_post(source.path, handler)
    app.router.add_route("*", "/v2/enqueue", events_v2_other_method)
