"""The document's building blocks: schema helpers, the answers and errors routes share, security."""

from typing import Any

from responder.web.query import MAX_ID

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def closed_object(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object: every listed property but the `optional` ones is always present."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


STRING: Schema = {"type": "string"}
TIME: Schema = {"type": "string", "format": "date-time"}
JSON_OBJECT: Schema = {"type": "object"}  # outputs and plans: whatever the stack holds
STRINGS: Schema = {"type": "array", "items": STRING}
JOB_IDS: Schema = {"type": "array", "items": {"type": "integer"}}

JSON_MEDIA = "application/json"
ERROR_CONTENT = {"application/json": {"schema": ref("Error")}}
EVENTS_V2_ERROR_CONTENT = {"application/json": {"schema": ref("EventsV2Error")}}
CHALLENGE = {
    "WWW-Authenticate": {"schema": STRING, "required": True, "description": "`Bearer` challenge"}
}
RETRY = {"Retry-After": {"schema": STRING, "required": True, "description": "seconds"}}


def answer(description: str, schema: Schema | None = None) -> Schema:
    return {"description": description, "content": {JSON_MEDIA: {"schema": schema or JSON_OBJECT}}}


def error(
    description: str, headers: Schema | None = None, content: Schema = ERROR_CONTENT
) -> Schema:
    result: Schema = {"description": description, "content": content}
    if headers:
        result["headers"] = headers
    return result


READ_AUTH = error("`RESPONDER_READ_AUTH` is on and the bearer token is missing or wrong")
WRITE_AUTH = error("Missing or wrong bearer token (the API token)", CHALLENGE)
BAD_REQUEST = error("A parameter or the body is invalid; the message names it")
NOT_FOUND = error("No such resource")
STORE_DOWN = error("The job store is unavailable; retry later", RETRY)
TOO_LARGE = error("The body is larger than `RESPONDER_MAX_BODY_BYTES`")
BODY_TIMEOUT = error("The body did not arrive within `RESPONDER_BODY_TIMEOUT`")
# Any route writing the store answers 503 while it fails (locked, disk full, database gone).
WRITE_ERRORS = {"401": WRITE_AUTH, "503": STORE_DOWN}
BODY_ERRORS = {"408": BODY_TIMEOUT, "413": TOO_LARGE}

# Reads are open unless RESPONDER_READ_AUTH is on; changes always need the API token.
READ_SECURITY: list[Schema] = [{}, {"apiToken": []}]
WRITE_SECURITY: list[Schema] = [{"apiToken": []}]


def job_id_param(description: str = "The job's id") -> Schema:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": f"{description}: ASCII digits; anything else is a 400.",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    }


def read_route(
    operation_id: str,
    summary: str,
    answers: dict[str, Schema],
    *,
    store: bool = True,
    unauthorized: Schema = READ_AUTH,
    **extra: Any,
) -> Schema:
    """A read route: open unless `RESPONDER_READ_AUTH` is on; a 503 while the store fails, if it
    reads the store."""
    errors = {"401": unauthorized, **({"503": STORE_DOWN} if store else {})}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": READ_SECURITY,
            **extra,
            "responses": {**answers, **errors},
        }
    }


def probe_route(operation_id: str, summary: str, answers: dict[str, Schema]) -> Schema:
    """Liveness and readiness: always open, whatever `RESPONDER_READ_AUTH` says."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["health"],
            "security": [],
            "responses": answers,
        }
    }


OPENMETRICS = "application/openmetrics-text"
HTML = "text/html"


def html_answer(description: str) -> Schema:
    return {"description": description, "content": {HTML: {"schema": STRING}}}


# The web page: HTML answers, and with `RESPONDER_READ_AUTH` on the sign-in form (401) in place of
