"""What every source shares when reading untrusted input: one bounded JSON decoder and short errors."""

import hmac
from typing import Any, TypeVar

import orjson

from responder.sources import InvalidDelivery

T = TypeVar("T")

# orjson stops at 1024 levels, but our own code (and json.dumps in the store) recurses: far below
# Python's recursion limit, and far above any real pager's payload (PagerDuty's is about 6 deep).
MAX_DEPTH = 64
MAX_ERRORS = 20  # an answer or log line lists at most this many errors, then counts the rest
MAX_QUOTE = 60  # characters of a sender's value quoted back in an error message

JSON_TYPES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


class InvalidJson(InvalidDelivery):
    """The body is not JSON we accept; `problem` says why without the prefix."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"body is not valid JSON: {problem}")
        self.problem = problem


def decode_json(body: bytes) -> Any:
    """Decode a body: UTF-8 without lone surrogates, finite numbers, at most `MAX_DEPTH` levels.

    orjson refuses invalid UTF-8, lone surrogate escapes and numbers beyond a double (as infinity),
    so every string can be stored and every number compared."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidJson(str(e)) from None
    # Each level opens a bracket, so a body with few brackets (any real pager's: about a dozen) is
    # shallow enough without the walk, which cost as much as decoding it.
    brackets = body.count(b"{") + body.count(b"[")
    if brackets > MAX_DEPTH and _deeper_than(document, MAX_DEPTH):
        raise InvalidJson(f"nested deeper than {MAX_DEPTH} levels")
    return document


def _deeper_than(document: Any, limit: int) -> bool:
    # Iterative, so the check itself cannot hit the recursion limit; only containers are visited.
    stack: list[tuple[Any, int]] = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    return JSON_TYPES.get(type(value), type(value).__name__)


def short(text: str) -> str:
    """A sender's text for an error message or a log line, cut to `MAX_QUOTE` characters."""
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 1] + "…"


def quoted(value: object) -> str:
    """A sender's value for an error message: its repr, cut to `MAX_QUOTE` characters."""
    return short(repr(value))


class Problems:
    """Error messages collected while validating: the first `MAX_ERRORS` kept, the rest counted."""

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.more = 0

    def add(self, message: str) -> None:
        if len(self.kept) < MAX_ERRORS:
            self.kept.append(message)
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.kept)

    def messages(self) -> list[str]:
        return self.kept + ([f"… and {self.more} more errors"] if self.more else [])


def optional(document: dict[str, Any], key: str, where: str, expected: type[T], default: T) -> T:
    """`document[key]` if it has the expected JSON type; `default` when absent or null."""
    value = document.get(key)
    if value is None:
        return default
    # bool is an int in Python, not a number in JSON.
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        path = f"{where}.{key}" if where else key
        raise InvalidDelivery(f"{path} must be {JSON_TYPES[expected]}, not {json_type(value)}")
    return value


def text(document: dict[str, Any], key: str, where: str) -> str:
    """An optional string field: "" when absent or null."""
    return optional(document, key, where, str, "")


def string_map(value: Any, where: str) -> dict[str, str]:
    """An object whose every value is a string (labels, annotations); empty when absent or null."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidDelivery(f"{where} must be an object of strings, not {json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidDelivery(
                f"{where} must be an object of strings ({where}.{short(key)} is {json_type(item)})"
            )
    return value


def bearer_matches(header: str, token: str) -> bool:
    """Whether the header is `Bearer <token>`. An empty configured token (an empty secret file)
    authenticates nothing, and neither does an empty offer. A header that is not ASCII (aiohttp keeps
    undecodable bytes as surrogates, which cannot be encoded for the comparison) holds no token."""
    scheme, _, offered = header.partition(" ")
    offered = offered.strip()
    return bool(
        token
        and offered
        and header.isascii()
        and scheme.lower() == "bearer"
        and hmac.compare_digest(offered.encode(), token.encode())
    )
