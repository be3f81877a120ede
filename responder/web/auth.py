"""Bearer-token checks: on the writes, and (with `read_auth` on) on all but the open paths."""

import time

from aiohttp import web

from responder.sources.parsing import bearer_matches
from responder.web.daemon import DAEMON
from responder.web.errors import ApiError, Handler
from responder.web.ui import pages
from responder.web.ui.session import COOKIE, session_valid
from responder.web.webhooks import SOURCES

# Open with read auth on: the probes (a kubelet or load balancer carries no token, and these say
# nothing about incidents), the webhook intake (each source checks its own signature or token),
# and what the sign-in page itself needs (its form, signing out, and the page's script and style).
# Exact paths: no prefix an odd path could start with.
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        pages.LOGIN_PATH,
        pages.LOGOUT_PATH,
        *(pages.STATIC_PREFIX + name for name in pages.STATIC_FILES),
        *(s.path for s in SOURCES),
    }
)


def require_token(request: web.Request, token: str) -> None:
    """Refuse the request unless it carries `Authorization: Bearer <token>` (the same check as the
    Alertmanager source's: see `bearer_matches`)."""
    if not bearer_matches(request.headers.get("Authorization", ""), token):
        raise ApiError(
            401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="responder"'}
        )


@web.middleware
async def read_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With `read_auth` on, every request but the open ones needs the API token: as a bearer token,
    or (for the web page) the sign-in cookie made from it. Whatever the method, and unknown paths
    too, so that a 404 or 405 tells nothing without it; the writes check the token again anyway."""
    # The path as the router matches it (`%2F` still encoded), not `request.path` (all decoded):
    # `/ui%2Flogin` is no open path, whatever route a `/{name}` might one day give it to.
    path = request.rel_url.path_safe
    if path in OPEN_PATHS:
        return await handler(request)
    # Before the daemon has started there is no token to match: nothing is read without one.
    token = request.app[DAEMON].credentials.api_token if DAEMON in request.app else ""
    if bearer_matches(request.headers.get("Authorization", ""), token):
        return await handler(request)
    if path.startswith(pages.UI_PREFIX):
        if session_valid(request.cookies.get(COOKIE, ""), token, time.time()):
            return await handler(request)
        return await pages.login_page(request, status=401, next_path=path)
    require_token(request, token)
    return await handler(request)
