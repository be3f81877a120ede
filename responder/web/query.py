"""Numbers read from paths and query strings, refused with a 400 naming the parameter."""

import math
import re

from aiohttp import web

from responder.web.errors import ApiError

MAX_ID = 2**63 - 1  # the store's integers are signed 64-bit

_DIGITS = re.compile(r"[0-9]{1,19}")


def job_id_of(request: web.Request) -> int:
    return whole_number(request.match_info["id"], "job id")


def whole_number(raw: str, name: str, *, low: int = 0) -> int:
    """ASCII digits only (int() also takes signs, `_` and other scripts' digits), within what
    the store can hold."""
    value = int(raw) if _DIGITS.fullmatch(raw) else -1
    if not low <= value <= MAX_ID:
        raise ApiError(400, f"{name} must be a whole number from {low} to {MAX_ID}")
    return value


def seconds(raw: str, name: str) -> float:
    """A non-negative number of seconds (a negative one counts as 0)."""
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number of seconds") from None
    if math.isnan(value):
        raise ApiError(400, f"{name} must be a number of seconds")
    return max(0.0, value)
