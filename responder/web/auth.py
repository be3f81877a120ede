"""Bearer-token check for the endpoints that change anything."""

import hmac

from aiohttp import web

from responder.web.errors import ApiError


def require_token(request: web.Request, token: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, offered = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        offered.strip().encode(), token.encode()
    ):
        raise ApiError(
            401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="responder"'}
        )
