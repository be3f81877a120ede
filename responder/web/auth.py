"""Bearer-token check for the endpoints that change anything."""

import hmac

from aiohttp import web

from responder.web.errors import ApiError


def require_token(request: web.Request, token: str) -> None:
    """Refuse the request unless it carries `Authorization: Bearer <token>`.

    An empty configured token (an empty secret file) authenticates nothing, and neither does an
    empty offer. A header that is not ASCII (aiohttp keeps undecodable bytes as surrogates, which
    cannot be encoded for the comparison) cannot hold a token either.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, offered = header.partition(" ")
    offered = offered.strip()
    if (
        not token
        or not offered
        or not header.isascii()
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(offered.encode(), token.encode())
    ):
        raise ApiError(
            401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="responder"'}
        )
