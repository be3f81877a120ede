"""Schemathesis hooks for tests/test_openapi.py: PagerDuty deliveries signed, so that generated
bodies reach the V3 parser instead of stopping at the signature check (SCHEMATHESIS_HOOKS)."""

import json
from typing import Any

import schemathesis
from schemathesis.core import NotSet

from tests.helpers import SECRET_A, sign

SIGNATURE = "X-PagerDuty-Signature"


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]
) -> None:
    """Sign the body as sent when the case carries a signature header (a case testing a missing
    header keeps it missing). The JSON is serialized here, the way `requests` would, and sent as
    these bytes (`data` wins over `json` in `requests`), so the signed bytes are the sent bytes;
    the case's body stays as generated, so schemathesis still knows whether it is valid."""
    headers = case.headers
    if case.operation.path != "/webhooks/pagerduty" or not headers or SIGNATURE not in headers:
        return
    if case.media_type not in (None, "application/json") or isinstance(case.body, NotSet):
        return  # another media type, or no body at all: sent unsigned
    body = case.body
    if not isinstance(body, bytes):
        body = json.dumps(body, allow_nan=False).encode()
        kwargs["data"] = body
    headers[SIGNATURE] = sign(body, SECRET_A)
