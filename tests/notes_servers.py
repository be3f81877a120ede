"""Local stand-ins for PagerDuty's REST API (incident notes) and a Slack incoming webhook, on
loopback, checking each request as the services document it and answering as they do.

PagerDuty: `POST /incidents/{id}/notes` and `GET /incidents/{id}/notes`, `Authorization: Token
token=<key>`, `From: <a user's email>` (required to create a note), `Accept:
application/vnd.pagerduty+json;version=2`, body `{"note": {"content": "..."}}` (no length limit is
documented; this one holds responder to its own bound of 25 000 characters); 201 `{"note": {...}}`,
errors `{"error": {"message", "code", "errors"}}`. The list of an incident's notes is one answer,
not paged (as the official clients call it: go-pagerduty's `ListIncidentNotesWithContext(ctx, id)`).
Slack: `POST /services/T…/B…/<token>`, JSON with `text` and/or Block Kit `blocks` within Slack's
limits; 200 `ok`, or 400 `invalid_blocks` / `invalid_payload`, as plain text.
A test scripts extra answers (429 with `Retry-After`, 500, a slow answer) before the normal one.
"""

import asyncio
import datetime
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pytest_aiohttp import AiohttpServer

PD_TOKEN = "y_NbAkKc66ryYTWUXYEu"  # the shape of a PagerDuty API key
PD_FROM = "oncall-bot@example.com"
PD_INCIDENTS = ("Q1X7KD4R9PVM2T", "QNOTE1", "QNOTE2", "QCRASHNOTE", "QNOTES")
SLACK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
PD_MAX_CONTENT = 25_000


@dataclass
class Scripted:
    """One answer given instead of the normal one; `delay`: seconds before answering (a slow
    service: the note is taken first, as a real one may have taken it)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0
    take: bool = False  # record the note as created even though the answer is not 201


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    status: int = 0


@dataclass
class FakeService:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    always: Scripted | None = None  # every POST answered so (e.g. 500 for good)
    problems: list[str] = field(default_factory=list)  # requests that broke the documented rules
    on_post: Callable[[], Awaitable[None]] | None = None  # after taking a note, before answering

    def posts(self, status: int | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.method == "POST" and (status is None or r.status == status)
        ]

    def scripted(self) -> Scripted | None:
        return self.script.pop(0) if self.script else self.always


@dataclass
class PagerDuty(FakeService):
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def contents(self, incident: str) -> list[str]:
        return [n["content"] for n in self.notes.get(incident, [])]


def _error(status: int, message: str, code: int, *errors: str) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = list(errors)
    return web.json_response({"error": body}, status=status)


Service = TypeVar("Service", bound=FakeService)


def recording(
    service: Service,
    answer: Callable[[Service, web.Request, bytes], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that records each request in `service` with the status `answer` gave it."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = Recorded(
            request.method, request.path, dict(request.headers), body, time.monotonic()
        )
        service.requests.append(record)
        response = await answer(service, request, body)
        record.status = response.status
        return response

    return handle


async def start_pagerduty(aiohttp_server: AiohttpServer) -> PagerDuty:
    service = PagerDuty()
    app = web.Application()
    app.router.add_route("*", "/incidents/{id}/notes", recording(service, _pagerduty))
    server = await aiohttp_server(app, host="127.0.0.1")
    service.url = str(server.make_url("")).rstrip("/")
    return service


async def _pagerduty(service: PagerDuty, request: web.Request, body: bytes) -> web.StreamResponse:
    def problem(text: str) -> None:
        service.problems.append(f"{request.method} {request.path}: {text}")

    if request.method not in ("GET", "POST"):
        problem("method")
        return _error(405, "Method Not Allowed", 2100)
    if request.headers.get("Authorization") != f"Token token={PD_TOKEN}":
        problem(f"Authorization {request.headers.get('Authorization')!r}")
        return _error(401, "Unauthorized", 2006)
    if request.headers.get("Accept") != "application/vnd.pagerduty+json;version=2":
        problem(f"Accept {request.headers.get('Accept')!r}")
    incident = request.match_info["id"]
    if incident not in PD_INCIDENTS:
        problem(f"unknown incident {incident}")
        return _error(404, "Not Found", 2100)
    if request.method == "GET":
        return web.json_response({"notes": service.notes.get(incident, [])})
    if request.headers.get("From") != PD_FROM:
        problem(f"From {request.headers.get('From')!r}")
        return _error(400, "Invalid Input Provided", 2001, "Requester User Not Found")
    if request.content_type != "application/json":
        problem(f"Content-Type {request.content_type}")
        return _error(400, "Invalid Input Provided", 2001)
    try:
        document = json.loads(body)
        content = document["note"]["content"]
        assert set(document) == {"note"} and set(document["note"]) == {"content"}
        assert isinstance(content, str) and content.strip()
    except (ValueError, KeyError, TypeError, AssertionError):
        problem(f"body {body[:200]!r}")
        return _error(400, "Invalid Input Provided", 2001, "Note content can't be blank.")
    if len(content) > PD_MAX_CONTENT:
        problem(f"content of {len(content)} characters")
        return _error(400, "Invalid Input Provided", 2001, "Note content is too long.")
    answer = service.scripted()
    note = {
        "id": "P" + uuid.uuid4().hex[:6].upper(),
        "user": {"id": "PBOT001", "type": "user_reference", "summary": "oncall bot"},
        "channel": {"summary": "The PagerDuty website or APIs"},
        "content": content,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    if answer is not None:
        if answer.take:
            service.notes.setdefault(incident, []).append(note)
        await asyncio.sleep(answer.delay)
        return web.Response(
            status=answer.status,
            headers=answer.headers,
            text=answer.body or json.dumps({"error": {"message": "scripted", "code": 0}}),
            content_type="application/json",
        )
    service.notes.setdefault(incident, []).append(note)
    if service.on_post is not None:
        await service.on_post()
    return web.json_response({"note": note}, status=201)


# Slack's Block Kit limits, as its reference gives them.
BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image"}


def block_problems(message: Any) -> list[str]:
    found: list[str] = []
    if not isinstance(message, dict):
        return ["not a JSON object"]
    if "text" not in message and "blocks" not in message:
        found.append("neither text nor blocks")
    if "text" in message and (
        not isinstance(message["text"], str) or len(message["text"]) > 40_000
    ):
        found.append("text is not a string of at most 40000 characters")
    blocks = message.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > 50:
        return [*found, "blocks is not a list of at most 50"]
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            found.append(f"block {i}: type {kind!r}")
            continue
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                found.append(f"block {i}: header text")
        if kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                found.append(f"block {i}: section without text or fields")
            if text is not None and (
                text.get("type") not in ("mrkdwn", "plain_text")
                or not 0 < len(text.get("text", "")) <= 3000
            ):
                found.append(f"block {i}: section text")
            if fields is not None and (
                len(fields) > 10
                or any(not 0 < len(f.get("text", "")) <= 2000 for f in fields)
                or any(f.get("type") not in ("mrkdwn", "plain_text") for f in fields)
            ):
                found.append(f"block {i}: section fields")
        if kind == "context":
            elements = block.get("elements", [])
            if not 0 < len(elements) <= 10:
                found.append(f"block {i}: context elements")
    return found


@dataclass
class Slack(FakeService):
    messages: list[dict[str, Any]] = field(default_factory=list)


async def start_slack(aiohttp_server: AiohttpServer) -> Slack:
    service = Slack()
    app = web.Application()
    app.router.add_route("*", "/services/{team}/{bot}/{token}", recording(service, _slack))
    server = await aiohttp_server(app, host="127.0.0.1")
    service.url = str(server.make_url(SLACK_PATH))
    return service


async def _slack(service: Slack, request: web.Request, body: bytes) -> web.StreamResponse:
    def problem(text: str) -> None:
        service.problems.append(f"{request.method} {request.path}: {text}")

    if request.method != "POST" or request.path != SLACK_PATH:
        problem("method or path")
        return web.Response(status=404, text="no_service")
    if request.content_type != "application/json":
        problem(f"Content-Type {request.content_type}")
        return web.Response(status=400, text="invalid_payload")
    try:
        message = json.loads(body)
    except ValueError:
        problem("not JSON")
        return web.Response(status=400, text="invalid_payload")
    found = block_problems(message)
    if found:
        service.problems.extend(found)
        return web.Response(status=400, text="invalid_blocks")
    answer = service.scripted()
    if answer is not None:
        if answer.take:
            service.messages.append(message)
        await asyncio.sleep(answer.delay)
        return web.Response(
            status=answer.status, headers=answer.headers, text=answer.body or "error"
        )
    service.messages.append(message)
    if service.on_post is not None:
        await service.on_post()
    return web.Response(text="ok")


def pagerduty_settings(service: PagerDuty) -> dict[str, object]:
    return {
        "pagerduty_api_token": PD_TOKEN,
        "pagerduty_from": PD_FROM,
        "pagerduty_api_url": service.url,
    }
