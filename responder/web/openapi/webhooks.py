"""The webhook routes: each source's request body, answers and error shape."""

from responder.sources import events_v2
from responder.store import DeliveryStatus
from responder.web.openapi.parts import (
    BODY_TIMEOUT,
    ERROR_CONTENT,
    EVENTS_V2_ERROR_CONTENT,
    JOB_IDS,
    JSON_MEDIA,
    JSON_OBJECT,
    RETRY,
    STRING,
    TIME,
    TOO_LARGE,
    Schema,
    answer,
    closed_object,
    error,
    nullable,
    ref,
)


def webhook_route(
    operation_id: str,
    summary: str,
    body: Schema,
    answers: dict[str, Schema],
    *,
    errors: Schema = ERROR_CONTENT,
    parameters: list[Schema] | None = None,
    security: list[Schema] | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["webhooks"],
        "parameters": parameters or [],
        "requestBody": {"required": True, "content": {JSON_MEDIA: {"schema": body}}},
        "responses": {
            **answers,
            "400": error(
                "Malformed, or not this source's format; the message names the field",
                content=errors,
            ),
            "401": error("Missing or wrong credential", content=errors),
            # The body deadline is enforced around every handler, in responder's own error shape.
            "408": BODY_TIMEOUT,
            "413": error(TOO_LARGE["description"], content=errors),
            "415": error(
                "Not `application/json`, or a `Content-Encoding` other than identity",
                content=errors,
            ),
            "503": error("Shutting down, or the job store cannot be written; retry", RETRY, errors),
        },
        "security": security if security is not None else [],
    }
    return {"post": operation}


PAGERDUTY_BODY: Schema = {
    "type": "object",
    "required": ["event"],
    "properties": {
        "event": {
            "type": "object",
            "required": ["id", "event_type", "resource_type", "occurred_at", "data"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "event_type": {"type": "string", "minLength": 1},
                "resource_type": {"type": "string", "minLength": 1},
                "occurred_at": {
                    **TIME,
                    "description": "With a zone, and within `RESPONDER_RETENTION` of now (an "
                    "older signed event is a replay): else 400.",
                },
                "data": {
                    **JSON_OBJECT,
                    "description": "An incident event's incident: a field of the wrong type is a "
                    "400 naming it.",
                },
            },
        }
    },
    "description": "A PagerDuty V3 webhook envelope.",
}

_TEXT: Schema = {"type": "string", "pattern": "\\S"}  # not blank
_STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}
# The sources take an optional field sent as null for one left out.
_OPT_STRING: Schema = {"type": ["string", "null"]}
_OPT_STRING_MAP: Schema = nullable(_STRING_MAP)

EVENTS_V2_BODY: Schema = {
    "type": "object",
    "required": ["routing_key", "event_action"],
    "properties": {
        "routing_key": {"type": "string", "pattern": "^[A-Za-z0-9]{32}$"},
        "event_action": {"enum": sorted(events_v2.ACTIONS)},
        "dedup_key": nullable(
            {"type": "string", "minLength": 1, "maxLength": events_v2.MAX_DEDUP_KEY}
        ),
        "payload": nullable(
            {
                "type": "object",
                "properties": {
                    "summary": nullable({"type": "string", "maxLength": events_v2.MAX_SUMMARY}),
                    "source": _OPT_STRING,
                    "severity": {"enum": [*events_v2.SEVERITIES, None]},
                    "timestamp": nullable({"type": "string", "format": "date-time"}),
                    **{key: _OPT_STRING for key in ("component", "group", "class")},
                    "custom_details": {"type": ["object", "string", "null"]},
                },
            }
        ),
        "links": nullable(
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["href"],
                    "properties": {"href": {"type": "string", "minLength": 1}, "text": _OPT_STRING},
                },
            }
        ),
        "images": nullable(
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["src"],
                    "properties": {
                        "src": {"type": "string", "minLength": 1},
                        "href": _OPT_STRING,
                        "alt": _OPT_STRING,
                    },
                },
            }
        ),
        "client": _OPT_STRING,
        "client_url": _OPT_STRING,
    },
    "allOf": [
        {
            "if": {"properties": {"event_action": {"const": "trigger"}}},
            "then": {
                "required": ["payload"],
                "properties": {
                    "payload": {
                        "type": "object",
                        "required": ["summary", "source", "severity"],
                        "properties": {
                            "summary": _TEXT,
                            "source": _TEXT,
                            "severity": {"enum": list(events_v2.SEVERITIES)},
                        },
                    }
                },
            },
            "else": {
                "required": ["dedup_key"],
                "properties": {"dedup_key": {"type": "string"}},
            },
        }
    ],
    "description": "A PagerDuty Events API v2 event: a trigger carries its payload, an "
    "acknowledge or resolve its `dedup_key`. An optional field may be null.",
}

ALERTMANAGER_BODY: Schema = {
    "type": "object",
    "required": ["version", "groupKey", "alerts"],
    "properties": {
        "version": {"const": "4"},
        "groupKey": STRING,
        "status": {"enum": ["firing", "resolved", None]},
        "receiver": _OPT_STRING,
        "externalURL": _OPT_STRING,
        "truncatedAlerts": {"type": ["integer", "null"]},
        **{key: _OPT_STRING_MAP for key in ("groupLabels", "commonLabels", "commonAnnotations")},
        "alerts": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["status", "labels", "fingerprint"],
                "properties": {
                    "status": {"enum": ["firing", "resolved"]},
                    "labels": _STRING_MAP,
                    "annotations": _OPT_STRING_MAP,
                    "fingerprint": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"},
                    **{key: _OPT_STRING for key in ("startsAt", "endsAt", "generatorURL")},
                },
            },
        },
    },
    "description": "An Alertmanager `webhook_config` notification, version 4. An optional "
    "field may be null.",
}

WEBHOOK_PATHS: dict[str, Schema] = {
    "/webhooks/pagerduty": webhook_route(
        "pagerdutyWebhook",
        "PagerDuty V3 webhooks, signed",
        PAGERDUTY_BODY,
        {
            "200": answer("A redelivery: nothing was stored", ref("DeliveryAnswer")),
            "202": answer(
                "Accepted: the delivery and its jobs are committed", ref("DeliveryAnswer")
            ),
        },
        parameters=[
            {
                "name": "X-PagerDuty-Signature",
                "in": "header",
                "required": True,
                "schema": STRING,
                "description": "`v1=<hex HMAC-SHA256 of the body>`, one entry per secret; else 401.",
            },
            {
                "name": "X-Webhook-Id",
                "in": "header",
                "schema": {"type": "string", "maxLength": 128, "pattern": "^[ -~]*$"},
                "description": "The delivery id; printable ASCII, else 400.",
            },
        ],
    ),
    "/v2/enqueue": {
        **webhook_route(
            "eventsV2Enqueue",
            "PagerDuty Events API v2 (routing key in the body); any other method is a 405 in "
            "the Events API's error shape",
            EVENTS_V2_BODY,
            {
                "202": answer(
                    "Processed",
                    closed_object(
                        {
                            "status": {"const": "success"},
                            "message": {"const": "Event processed"},
                            "dedup_key": STRING,
                        }
                    ),
                )
            },
            errors=EVENTS_V2_ERROR_CONTENT,
        ),
    },
    "/webhooks/alertmanager": webhook_route(
        "alertmanagerWebhook",
        "Alertmanager notifications (the Alertmanager bearer token)",
        ALERTMANAGER_BODY,
        {
            "202": answer(
                "Each alert's outcome",
                closed_object(
                    {
                        "status": {"const": "accepted"},
                        "alerts": {
                            "type": "array",
                            "items": closed_object(
                                {
                                    "incident_id": STRING,
                                    "event_type": STRING,
                                    "status": {"enum": [s.value for s in DeliveryStatus]},
                                    "jobs": JOB_IDS,
                                }
                            ),
                        },
                    }
                ),
            )
        },
        security=[{"alertmanagerToken": []}],
    ),
}
