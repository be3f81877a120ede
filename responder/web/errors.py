"""Every error answer is JSON: `{"error": ..., "status": ...}`, never an HTML page or a traceback."""

from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web

from responder import metrics
from responder.logs import get_logger
from responder.sources import InvalidDelivery, Unauthorized
from responder.store import RecordRejected, StoreUnavailable

log = get_logger("responder.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")
RETRY_AFTER = {"Retry-After": "5"}  # seconds a sender waits before retrying a 503


class ApiError(Exception):
    """Raised by handlers; answered as a JSON error with this status."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
        errors: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.body = body  # a source-specific error shape (the Events API's), else ours
        self.errors = list(errors) or [message]  # each problem, for a shape that lists them


def api_error(error: Exception, rejected: str = "request.rejected") -> ApiError | None:
    """The answer to a domain error (a refused delivery, the store), or None for any other error.
    A refusal is logged as `rejected`: a webhook's is `delivery.rejected`, the event the log's
    readers count deliveries by; a read's or an operator's request is not a delivery."""
    match error:
        case ApiError():
            return error
        case InvalidDelivery():
            log.warning(rejected, reason=error.message, errors=error.errors)
            return ApiError(400, error.message, errors=error.errors)
        case Unauthorized():
            log.warning(rejected, reason=error.reason)
            return ApiError(401, error.message, error.headers, errors=error.errors)
        case RecordRejected():
            log.warning(rejected, reason=str(error))
            return ApiError(400, str(error))
        case StoreUnavailable():
            metrics.store_error("http")
            return ApiError(503, f"job store unavailable; retry later ({error})", RETRY_AFTER)
    return None


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:  # aiohttp's own: no route (404), wrong method (405), too large
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k in KEPT_HEADERS}
        return error_response(e.status, e.reason, headers)
    except Exception as e:
        answer = api_error(e, "request.rejected")
        if answer is None:
            log.exception("http.unhandled_error", path=request.path, method=request.method)
            return error_response(500, "internal error")
        if answer.body is not None:
            return web.json_response(
                dict(answer.body), status=answer.status, headers=answer.headers
            )
        return error_response(answer.status, answer.message, answer.headers)
