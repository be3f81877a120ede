"""The web page's routes: HTML answers, and the sign-in form in place of a page without the token."""

from responder.web.openapi.parts import (
    BAD_REQUEST,
    BODY_ERRORS,
    CHALLENGE,
    NOT_FOUND,
    STRING,
    Schema,
    error,
    html_answer,
    job_id_param,
    read_route,
)

UI_SIGN_IN = {
    **html_answer(
        "`RESPONDER_READ_AUTH` is on and neither the token nor a session cookie came: the sign-in form"
    ),
    "headers": CHALLENGE,
}
# Signing in or out is refused when another site's page posted it (cross-site request forgery).
_CROSS_SITE = error("Posted from another site's page (`Sec-Fetch-Site` is not `same-origin`)")
_SEE_OTHER: Schema = {
    "description": "Back to a page of the web UI",
    "headers": {"Location": {"schema": STRING, "required": True}},
}
UI_PATHS: dict[str, Schema] = {
    "/ui/": read_route(
        "uiOverview",
        "The web page: incidents, live stacks, jobs awaiting approval",
        {"200": html_answer("The page")},
        unauthorized=UI_SIGN_IN,
        tags=["ui"],
    ),
    "/ui/jobs/{id}": read_route(
        "uiJob",
        "A job's page: steps, timings, outcome, plan, masked outputs",
        {
            "200": html_answer("The page"),
            "400": html_answer("Not a job id"),
            "404": html_answer("No such job"),
        },
        unauthorized=UI_SIGN_IN,
        tags=["ui"],
        parameters=[job_id_param()],
    ),
    "/ui/login": {
        "get": {
            "operationId": "uiLoginForm",
            "summary": "The sign-in form (open, also with `RESPONDER_READ_AUTH`)",
            "tags": ["ui"],
            "security": [],
            "parameters": [{"name": "next", "in": "query", "schema": STRING}],
            "responses": {"200": html_answer("The form")},
        },
        "post": {
            "operationId": "uiLogin",
            "summary": "Sign in with the API token: a session cookie for the page's buttons",
            "tags": ["ui"],
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"token": STRING, "next": STRING},
                            "required": ["token"],
                        }
                    }
                },
            },
            "responses": {
                "303": {
                    **_SEE_OTHER,
                    "headers": {
                        **_SEE_OTHER["headers"],
                        "Set-Cookie": {"schema": STRING, "required": True},
                    },
                },
                "400": BAD_REQUEST,
                "401": html_answer("Wrong token: the form again"),
                "403": _CROSS_SITE,
                **BODY_ERRORS,
            },
        },
    },
    "/ui/logout": {
        "post": {
            "operationId": "uiLogout",
            "summary": "Sign out: the session cookie is dropped",
            "tags": ["ui"],
            "security": [],
            "responses": {"303": _SEE_OTHER, "403": _CROSS_SITE},
        }
    },
    "/ui/static/{name}": {
        "get": {
            "operationId": "uiStatic",
            "summary": "The page's script and style (named files only)",
            "tags": ["ui"],
            "security": [],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": STRING}],
            "responses": {
                "200": {
                    "description": "The file",
                    "content": {
                        "text/css": {"schema": STRING},
                        "text/javascript": {"schema": STRING},
                        "application/javascript": {"schema": STRING},
                    },
                },
                "404": NOT_FOUND,
            },
        }
    },
}
