"""The OpenAPI document: valid 3.1, listing exactly the router's routes, and every answer of the live
daemon matching it (schemathesis over every route, and each route's success answers by hand)."""

import asyncio
import contextlib
import json
import os
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import schemathesis
from aiohttp import ClientSession, web

from responder.daemon import create_app
from responder.playbook import Context, Playbook, manual, on, playbook
from responder.store import JobStatus
from responder.web.app import server_options
from responder.web.daemon import DAEMON, Daemon
from responder.web.openapi import DOCUMENT
from tests.fakes import FakeOperations
from tests.helpers import API_TOKEN, REPO, SECRET_A, LogCapture, pd_event, settings_for, sign
from tests.openapi_answers import assert_documented

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Every check schemathesis has but `positive_data_acceptance`: input valid by the document may
# rightly be refused by what no schema can say (an unsigned webhook is a 401, a playbook name or
# param the daemon does not have a 404 or 400).
CHECKS = ("--checks", "all", "--exclude-checks", "positive_data_acceptance")
SCHEMATHESIS_TIMEOUT = 240.0  # seconds; the run takes well under a minute on 2 cores


def operator_playbooks() -> list[Playbook]:
    """A provisioning playbook, a destroy waiting for approval, and a manual one with a param."""

    @playbook(idle_ttl=3600)
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Up the incident's stack."""
        await ctx.stack.set_config({"note": ctx.event.id})
        await ctx.stack.up()

    @playbook(allow_destroy=True, approve_destroy=True)
    @on("incident.resolved")
    async def teardown(ctx: Context) -> None:
        """Destroy it, once approved."""
        await ctx.stack.destroy(remove=True)

    @playbook(params=("note",))
    @manual
    async def note(ctx: Context) -> None:
        """Set a note on a stack."""
        await ctx.stack.set_config({"note": ctx.params.get("note", "")})
        await ctx.stack.up()

    return [provision, teardown, note]


@contextlib.asynccontextmanager
async def live_daemon(
    data_dir: Path, logs: LogCapture, ops: FakeOperations
) -> AsyncIterator[tuple[str, Daemon]]:
    """The daemon on a loopback port with the fake stack operations (no Pulumi runs), its
    Alertmanager token the API token, so a client holding one token reaches past every check."""
    settings = settings_for(data_dir, alertmanager_token=API_TOKEN)
    app = create_app(
        settings, redactor=logs.redactor, playbooks=operator_playbooks(), operations=ops
    )
    runner = web.AppRunner(app, **server_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", app[DAEMON]
    finally:
        await runner.cleanup()


def router_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route, as the document names them: a parameter matching
    alternatives (`{decision:approve|reject}`) is one path each, and aiohttp's automatic HEAD
    beside each GET is left out."""
    found: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        info = resource.get_info()
        if "path" in info:
            paths = [info["path"]]
        elif "formatter" in info:
            paths = _expand(info["formatter"], info["pattern"].pattern)
        else:  # a static directory
            paths = [info["prefix"].rstrip("/") + "/{filename}"]
        # A route for any method ("*") answers the methods not documented with a 405 (which
        # schemathesis' `unsupported_method` check sends), so it documents none of its own.
        methods = {route.method for route in resource} - {"*"}
        if "GET" in methods:
            methods.discard("HEAD")
        found |= {(method, path) for method in methods for path in paths}
    return found


def _expand(formatter: str, pattern: str) -> list[str]:
    paths = [formatter]
    for name, alternatives in re.findall(r"\(\?P<(\w+)>([\w|-]+)\)", pattern):
        paths = [p.replace(f"{{{name}}}", a) for p in paths for a in alternatives.split("|")]
    return paths


def document_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }


def test_the_document_is_valid_openapi_3_1() -> None:
    schemathesis.openapi.from_dict(DOCUMENT).validate()
    assert DOCUMENT["openapi"].startswith("3.1.")


async def test_the_document_lists_exactly_the_routers_routes(
    data_dir: Path, logs: LogCapture
) -> None:
    app = create_app(settings_for(data_dir), playbooks=[], operations=FakeOperations())
    routes = router_routes(app)
    assert ("POST", "/jobs/{id}/approve") in routes and ("GET", "/openapi.json") in routes
    assert routes - document_routes() == set(), "routes missing from the document"
    assert document_routes() - routes == set(), "documented routes the router does not have"


async def test_the_live_document_is_the_document(data_dir: Path, logs: LogCapture) -> None:
    async with live_daemon(data_dir, logs, FakeOperations()) as (url, _), ClientSession() as http:
        response = await http.get(f"{url}/openapi.json")
        assert response.status == 200 and response.content_type == "application/json"
        assert await response.json() == DOCUMENT
        assert_documented("GET", "/openapi.json", 200, response.content_type, DOCUMENT)


async def test_schemathesis_finds_no_failure_on_any_route(data_dir: Path, logs: LogCapture) -> None:
    """Every route with generated and mutated input, the API token supplied: no 5xx, and every
    answer's status, media type, headers and body as documented."""
    ops = FakeOperations()
    async with live_daemon(data_dir, logs, ops) as (url, daemon), ClientSession() as http:
        await seed(http, url, daemon)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {API_TOKEN}",
            *CHECKS,
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=data_dir,  # where it may write its reports
            env={
                **os.environ,
                # PagerDuty bodies signed, so they reach the parser (not only the signature check).
                "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
                "PYTHONPATH": str(REPO),
            },
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), SCHEMATHESIS_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[text.find("=== FAILURES") :]  # its report of each failure
    # Every operation, none skipped, but the document's own (test_the_live_document_is_...).
    assert f"Tested: {len(document_routes()) - 1}\n" in text, text
    # Split at newlines only: str.splitlines() would also split a line at a U+2028 that a logged
    # value (a quoted part of a generated body) holds.
    lines = [json.loads(line) for line in logs.text.split("\n") if line.strip()]
    assert not [line for line in lines if line["event"] == "http.unhandled_error"]
    verified = Counter(line["source"] for line in lines if line["event"] == "delivery.verified")
    # Generated bodies got past the signature and the token to the parsers, not only 401s (the
    # seed sent two PagerDuty deliveries).
    assert verified["pagerduty"] > 2 and verified["alertmanager"] > 0, verified


async def seed(http: ClientSession, url: str, daemon: Daemon) -> None:
    """Jobs, an incident, a live stack and a job awaiting approval, so reads answer with records."""
    for event in ("incident.triggered", "incident.resolved"):
        body = pd_event(event, "QSEED")
        headers = {
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": sign(body, SECRET_A),
        }
        assert (
            await http.post(f"{url}/webhooks/pagerduty", data=body, headers=headers)
        ).status == 202
        await wait_until_settled(daemon)


async def wait_until_settled(daemon: Daemon) -> list[int]:
    """The ids of all jobs, once none is queued or running."""
    for _ in range(200):
        jobs = await daemon.store.list_jobs(limit=1000)
        if all(j.status.final or j.status == JobStatus.AWAITING_APPROVAL for j in jobs):
            return [j.id for j in jobs]
        await asyncio.sleep(0.05)
    raise AssertionError("jobs did not settle")


async def test_each_routes_answers_match_the_document(data_dir: Path, logs: LogCapture) -> None:
    """The answers schemathesis rarely reaches (a real job approved, cancelled, run by hand, each
    source's accepted delivery), each checked against the document."""
    ops = FakeOperations()
    async with live_daemon(data_dir, logs, ops) as (url, daemon), ClientSession() as http:

        async def check(method: str, path: str, template: str, **kwargs: object) -> object:
            response = await http.request(method, f"{url}{path}", **kwargs)  # type: ignore[arg-type]
            body = await response.json()
            assert_documented(method, template, response.status, response.content_type, body)
            return body

        trigger = pd_event("incident.triggered", "QDOC")
        signed = {
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": sign(trigger, SECRET_A),
        }
        for _ in range(2):  # accepted, then a redelivery
            await check(
                "POST", "/webhooks/pagerduty", "/webhooks/pagerduty", data=trigger, headers=signed
            )
        await wait_until_settled(daemon)
        resolve = pd_event("incident.resolved", "QDOC")
        signed["X-PagerDuty-Signature"] = sign(resolve, SECRET_A)
        await check(
            "POST", "/webhooks/pagerduty", "/webhooks/pagerduty", data=resolve, headers=signed
        )
        [_, waiting] = await wait_until_settled(daemon)
        job = await check("GET", f"/jobs/{waiting}", "/jobs/{id}")
        assert isinstance(job, dict) and job["status"] == "awaiting_approval" and job["plan"]
        await check("POST", f"/jobs/{waiting}/reject", "/jobs/{id}/reject", headers=AUTH)
        await check("POST", f"/jobs/{waiting}/approve", "/jobs/{id}/approve", headers=AUTH)  # 409
        await check("POST", f"/jobs/{waiting}/cancel", "/jobs/{id}/cancel", headers=AUTH)  # 409
        await check("GET", "/jobs?limit=1", "/jobs")
        await check("GET", "/incidents/QDOC", "/incidents/{id}")
        stacks = await check("GET", "/stacks", "/stacks")
        assert isinstance(stacks, dict) and stacks["stacks"][0]["in_backend"] is True
        await check("GET", "/playbooks", "/playbooks")
        await check("GET", "/readyz", "/readyz")

        gate = ops.gate("up")  # a manual run held in its `up`: 202 queued, then cancelled running
        queued = await check(
            "POST",
            "/playbooks/note/run",
            "/playbooks/{name}/run",
            headers=AUTH,
            json={"params": {"note": "x"}},
        )
        assert isinstance(queued, dict) and queued["status"] == "queued"
        await asyncio.wait_for(gate.entered.wait(), 10)
        cancelled = await check(
            "POST", f"/jobs/{queued['job']}/cancel", "/jobs/{id}/cancel", headers=AUTH
        )
        assert isinstance(cancelled, dict) and cancelled["status"] == "running"  # a 202
        gate.release.set()
        done = await check(
            "POST", "/playbooks/note/run?wait=10", "/playbooks/{name}/run", headers=AUTH, json={}
        )
        assert isinstance(done, dict) and done["status"] == "succeeded"

        alert = {
            "version": "4",
            "groupKey": "g",
            "status": "firing",
            "alerts": [{"status": "firing", "labels": {"alertname": "x"}, "fingerprint": "f1"}],
        }
        await check(
            "POST", "/webhooks/alertmanager", "/webhooks/alertmanager", json=alert, headers=AUTH
        )
        key = daemon.credentials.events_v2_routing_keys[0]
        event = {
            "routing_key": key,
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "h", "severity": "info"},
        }
        await check("POST", "/v2/enqueue", "/v2/enqueue", json=event)
        other = await http.get(f"{url}/v2/enqueue")  # any other method: the Events API's shape
        assert other.status == 405 and set(await other.json()) == {"status", "message", "errors"}


async def test_with_read_auth_every_read_route_answers_a_documented_401(
    data_dir: Path, logs: LogCapture
) -> None:
    """`RESPONDER_READ_AUTH=true`: each documented read route without the token gets its documented
    401; the open ones (probes, sign-in form, static files) answer as ever."""
    settings = settings_for(data_dir, read_auth=True)
    app = create_app(settings, redactor=logs.redactor, playbooks=[], operations=FakeOperations())
    async with served_app(app) as url, ClientSession() as http:
        refused = set()
        for path, operations in DOCUMENT["paths"].items():
            if "get" not in operations:
                continue
            concrete = path.replace("{id}", "1").replace("{name}", "ui.css")
            response = await http.get(f"{url}{concrete}", allow_redirects=False)
            body = await response.json() if response.content_type == "application/json" else None
            assert_documented("GET", path, response.status, response.content_type, body)
            if response.status == 401:
                refused.add(path)
                with_token = await http.get(f"{url}{concrete}", headers=AUTH)
                assert with_token.status != 401, path
    # Exactly the routes documented as open unless read auth is on.
    assert refused == {
        path
        for path, operations in DOCUMENT["paths"].items()
        if operations.get("get", {}).get("security") == [{}, {"apiToken": []}]
    }
    assert {"/", "/jobs", "/metrics", "/ui/", "/openapi.json"} <= refused


@contextlib.asynccontextmanager
async def served_app(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# Regressions: what schemathesis found, each answered as documented now.


async def test_a_sign_in_body_that_is_not_a_form_is_a_400(data_dir: Path, logs: LogCapture) -> None:
    async with live_daemon(data_dir, logs, FakeOperations()) as (url, _), ClientSession() as http:
        for content_type, body in (
            ("multipart/form-data", b"token=&next="),  # no boundary: was a 500
            ("multipart/form-data; boundary=x", b"not as the boundary says"),
        ):
            response = await http.post(
                f"{url}/ui/login", data=body, headers={"Content-Type": content_type}
            )
            assert response.status == 400, content_type
            answer = await response.json()
            assert_documented("POST", "/ui/login", 400, response.content_type, answer)
            assert answer["error"] == "the sign-in form's body is malformed"
    # Read as text: the lines quote what was sent, and str.splitlines() would also split a line
    # at a U+2028 inside a JSON string.
    assert '"http.unhandled_error"' not in logs.text  # read as text: see the schemathesis test


async def test_a_run_with_an_incident_id_that_is_not_a_string_is_a_400(
    data_dir: Path, logs: LogCapture
) -> None:
    """`{}`, `[]`, `0` and `false` were taken for "no incident id" and the run queued."""
    async with (
        live_daemon(data_dir, logs, FakeOperations()) as (url, daemon),
        ClientSession() as http,
    ):
        wrong: list[object] = [{}, [], 0, False, 1]
        for value in wrong:
            response = await http.post(
                f"{url}/playbooks/note/run", headers=AUTH, json={"incident_id": value}
            )
            assert response.status == 400, value
            assert (await response.json())["error"] == "incident_id must be a string"
        assert await daemon.store.list_jobs() == []
        for none in (None, ""):  # no incident id: the run gets its own
            response = await http.post(
                f"{url}/playbooks/note/run", headers=AUTH, json={"incident_id": none}
            )
            assert response.status == 202, none


async def test_a_missing_static_file_is_a_documented_404(data_dir: Path, logs: LogCapture) -> None:
    """A static file the page does not have is the JSON error, as documented (aiohttp's own
    static route answered a well-formed name it could not find with an empty body)."""
    async with live_daemon(data_dir, logs, FakeOperations()) as (url, _), ClientSession() as http:
        for name in ("0", "missing.css", "..%2fpages.py"):
            response = await http.get(f"{url}/ui/static/{name}")
            assert response.status == 404, name
            body = await response.json()
            assert_documented("GET", "/ui/static/{name}", 404, response.content_type, body)
        for name in ("ui.css", "ui.js"):
            found = await http.get(f"{url}/ui/static/{name}")
            assert_documented("GET", "/ui/static/{name}", found.status, found.content_type)


def test_an_answer_off_the_document_is_caught() -> None:
    """The check the end-to-end tests use fails on each way an answer can differ."""
    good = {"response": "OK"}
    assert_documented("GET", "/", 200, "application/json", good)
    for status, content_type, body in (
        (201, "application/json", good),  # an undocumented status
        (200, "text/html", good),  # an undocumented media type
        (200, "application/json", {}),  # a missing field
        (200, "application/json", {**good, "extra": 1}),  # a field the document does not have
        (200, "application/json", {"response": "ok"}),  # a wrong value
    ):
        with pytest.raises(AssertionError):
            assert_documented("GET", "/", status, content_type, body)
