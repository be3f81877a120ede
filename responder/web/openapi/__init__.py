"""The OpenAPI 3.1 document of the HTTP API, served at GET /openapi.json.

Written by hand next to the handlers it describes; tests keep it true: its (method, path) set must
equal the router's, and schemathesis checks every answer of the live daemon against it."""

from aiohttp import web

from responder import __version__
from responder.web.openapi.api import API_PATHS
from responder.web.openapi.components import SCHEMAS
from responder.web.openapi.parts import Schema
from responder.web.openapi.ui import UI_PATHS
from responder.web.openapi.webhooks import WEBHOOK_PATHS

routes = web.RouteTableDef()

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "responder",
        "version": __version__,
        "description": (
            "Pager webhooks in, playbooks run on Pulumi burner stacks. Every error is JSON: "
            '`{"error", "status"}` (the Events API v2 route: PagerDuty\'s `{"status", '
            '"message", "errors"}`). Every GET route also answers HEAD.'
        ),
    },
    "paths": {**API_PATHS, **UI_PATHS, **WEBHOOK_PATHS},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "apiToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "`RESPONDER_API_TOKEN` (or `data/api-token`).",
            },
            "alertmanagerToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "`RESPONDER_ALERTMANAGER_TOKEN` (or `data/alertmanager-token`).",
            },
        },
    },
}


@routes.get("/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
