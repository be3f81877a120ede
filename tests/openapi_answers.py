"""Check one HTTP answer against the OpenAPI document: its status, media type and body schema."""

from typing import Any

import jsonschema_rs

from responder.web.openapi import DOCUMENT


def assert_documented(
    method: str, path: str, status: int, content_type: str, body: Any = None
) -> None:
    """Fail unless the document lists `status` for the operation at the path template `path`
    (e.g. "/jobs/{id}"), with this media type, and the JSON `body` matches that answer's schema."""
    operation = DOCUMENT["paths"][path][method.lower()]
    answer = operation["responses"].get(str(status))
    assert answer is not None, f"{method} {path}: {status} is not documented"
    content = answer.get("content", {})
    assert content_type in content, f"{method} {path} {status}: {content_type} is not documented"
    if content_type != "application/json":
        return
    # The answer's schema with the document's components beside it, so its $refs resolve.
    schema = {**content[content_type]["schema"], "components": DOCUMENT["components"]}
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in jsonschema_rs.Draft202012Validator(schema).iter_errors(body)
    ]
    assert not errors, f"{method} {path} {status} does not match the document: {errors}"
