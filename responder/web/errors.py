"""Every error answer is JSON: `{"error": ..., "status": ...}`, never an HTML page or a traceback."""

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from responder.logs import get_logger

log = get_logger("responder.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


class ApiError(Exception):
    """Raised by handlers; answered as a JSON error with this status."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.body = body  # a source-specific error shape (the Events API's), else ours


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        if e.body is not None:
            return web.json_response(dict(e.body), status=e.status, headers=e.headers)
        return error_response(e.status, e.message, e.headers)
    except (
        web.HTTPException
    ) as e:  # aiohttp's own: no route (404), wrong method (405), too large (413)
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k in KEPT_HEADERS}
        return error_response(e.status, e.reason, headers)
    except Exception:
        log.exception("http.unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal error")
