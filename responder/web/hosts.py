"""The Host names the daemon answers to, so that another site's page cannot read it by DNS rebinding."""

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from responder.config import host_key, is_loopback
from responder.logs import get_logger
from responder.web.errors import Handler, error_response

log = get_logger("responder.web")

ANY = "*"
# The answer to another Host: 421 Misdirected Request, "not able to produce a response" for it.
MISDIRECTED = 421


def host_check(bind_host: str, allowed: tuple[str, ...]) -> Middleware | None:
    """A middleware refusing requests whose Host is not one of `allowed` (names without a port) or
    a loopback name; None when every Host is answered: `*` is allowed, or nothing is configured
    and the daemon listens beyond loopback (a load balancer or a pager sends its own names).

    A daemon on loopback answers to loopback names only by default. Without that, any page the
    operator's browser opens could resolve its own name to 127.0.0.1 and read what the API and
    the web page show (reads need no token by default): its requests carry its own name as Host.
    No other site can make a browser send a loopback name as Host, so those are always answered.
    """
    names = frozenset(host_key(name) for name in allowed)
    if ANY in names or (not names and not is_loopback(bind_host)):
        return None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get(hdrs.HOST)
        if header is None:  # HTTP/1.0 without one: not a browser's request
            return await handler(request)
        name = host_name(header)
        if name in names or is_loopback(name):
            return await handler(request)
        log.warning("http.host_refused", host=header[:100], path=request.path[:200])
        return error_response(
            MISDIRECTED,
            "this daemon does not answer to the host the request names"
            " (RESPONDER_ALLOWED_HOSTS lists those it does)",
        )

    return middleware


def host_name(header: str) -> str:
    """The name a Host header gives, without its port, as `host_key` spells it."""
    header = header.strip().lower()
    if header.startswith("["):
        return host_key(header[1:].split("]", 1)[0])
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header
