"""Bearer-token check for the endpoints that change anything."""

from aiohttp import web

from responder.sources.parsing import bearer_matches
from responder.web.errors import ApiError


def require_token(request: web.Request, token: str) -> None:
    """Refuse the request unless it carries `Authorization: Bearer <token>` (the same check as the
    Alertmanager source's: see `bearer_matches`)."""
    if not bearer_matches(request.headers.get("Authorization", ""), token):
        raise ApiError(
            401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="responder"'}
        )
