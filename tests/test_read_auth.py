"""RESPONDER_READ_AUTH: with it on, every read route (found by walking the app's router, so new ones
are covered) needs the API token; the probes and the webhook intake stay as they are."""

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from responder.daemon import create_app
from responder.playbook import Context, on
from responder.web.ui.session import SESSION_SECONDS, session_valid, session_value
from tests.fakes import FakeOperations
from tests.helpers import API_TOKEN, Client, LogCapture, pd_event, settings_for

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
# Open whatever the setting: probes, the webhook intake (own signatures and tokens), and what the
# sign-in page needs. Written out here, not imported: a route that drifts open must fail.
OPEN = {"/healthz", "/readyz", "/ui/login", "/ui/static/ui.js", "/ui/static/ui.css"}
WEBHOOKS = {"/webhooks/pagerduty", "/webhooks/alertmanager", "/v2/enqueue"}


@on("incident.triggered")
async def nothing(_ctx: Context) -> None:
    """Touches no stack."""


def read_paths(app: web.Application) -> set[str]:
    """A concrete path for every GET route of the app: parameters filled with `1` (the page's
    static files with each file)."""
    paths = set()
    for resource in app.router.resources():
        if not any(route.method == "GET" for route in resource):
            continue
        info = resource.get_info()
        path = info.get("formatter", info.get("path", ""))
        if path == "/ui/static/{name}":
            paths |= {"/ui/static/ui.js", "/ui/static/ui.css"}
        else:
            paths.add(re.sub(r"\{[^}]+\}", "1", path))
    return paths


async def delivered(client: Client) -> None:
    """Incident `1` and its job 1: every path parameter filled with `1` names something."""
    body = pd_event("incident.triggered", "1", title="QREAD")
    assert (await client.deliver(body, "wh-read")).status == 202
    await client.wait_for_jobs(incident_id="1")


async def test_with_read_auth_every_read_route_needs_the_token(make_client: MakeClient) -> None:
    client = await make_client([nothing], read_auth=True)
    await delivered(client)  # the intake keeps its own auth: a signed delivery needs no token
    paths = read_paths(client.app)
    assert {"/", "/jobs", "/jobs/1", "/ui/", "/ui/jobs/1", "/stacks", "/playbooks"} <= paths
    assert {"/metrics", "/openapi.json"} <= paths
    assert not (paths & WEBHOOKS)
    for path in sorted(paths - OPEN):
        for method in ("GET", "HEAD"):
            anonymous = await client.http.request(method, path)
            assert anonymous.status == 401, (method, path, anonymous.status)
            wrong = await client.http.request(method, path, headers={"Authorization": "Bearer x"})
            assert wrong.status == 401, (method, path, wrong.status)
            allowed = await client.http.request(method, path, headers=AUTH)
            assert allowed.status < 400, (method, path, allowed.status)
        if not path.startswith("/ui/"):
            answer = await client.http.get(path)
            assert await answer.json() == {"error": "missing or wrong bearer token", "status": 401}
    for path in OPEN:
        assert (await client.http.get(path)).status == 200, path
    assert (await client.http.get("/no/such/route")).status == 401  # nothing told without it
    assert (await client.http.get("/no/such/route", headers=AUTH)).status == 404


async def test_without_read_auth_reads_need_no_token(make_client: MakeClient) -> None:
    client = await make_client([nothing])
    await delivered(client)
    for path in sorted(read_paths(client.app)):
        answer = await client.http.get(path)
        assert answer.status < 400, (path, answer.status)
    # Writes need the token either way.
    assert (await client.http.post("/jobs/1/cancel")).status == 401


async def test_the_page_opens_with_the_sign_in_cookie_the_api_does_not(
    make_client: MakeClient,
) -> None:
    client = await make_client([nothing], read_auth=True)
    await delivered(client)
    page = await client.http.get("/ui/jobs/1")
    assert page.status == 401 and page.content_type == "text/html"
    text = await page.text()
    assert 'action="/ui/login"' in text and 'name="next" value="/ui/jobs/1"' in text
    assert "QREAD" not in text

    signed_in = await client.http.post(
        "/ui/login", data={"token": API_TOKEN, "next": "/ui/jobs/1"}, allow_redirects=False
    )
    assert signed_in.status == 303
    # The test client keeps the cookie, like a browser.
    assert (await client.http.get("/ui/jobs/1")).status == 200
    assert "QREAD" in await (await client.http.get("/ui/")).text()
    assert (await client.http.get("/jobs/1")).status == 401  # the cookie is for the page only

    client.http.session.cookie_jar.clear()
    forged = {"Cookie": "responder_ui=99999999999.00ff"}
    assert (await client.http.get("/ui/", headers=forged)).status == 401


async def test_with_read_auth_no_route_method_or_odd_path_answers_without_the_token(
    make_client: MakeClient,
) -> None:
    """Not a 404 or 405 either: whatever the method, a route added later included."""
    client = await make_client([nothing], read_auth=True)
    routed = set()
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = re.sub(r"\{[^}]+\}", "1", info.get("formatter", info.get("path", "")))
        routed |= {(route.method, path) for route in resource}
    assert {("POST", "/jobs/1/cancel"), ("GET", "/metrics"), ("GET", "/openapi.json")} <= routed
    odd = ("/no/such/route", "/ui/static/nope", "/ui/static/", "/ui/login/", "/healthz/", "/ui")
    for method, path in sorted(routed | {("GET", path) for path in odd}):
        if path in OPEN | WEBHOOKS | {"/ui/logout"}:
            continue
        for other in {method, "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "TRACE"} - {"*"}:
            answer = await client.http.request(other, path)
            assert answer.status == 401, (other, path, answer.status)
    for path in ("/jobs", "/metrics", "/openapi.json", "/no/such/route"):
        answer = await client.http.request("OPTIONS", path, headers=AUTH)
        assert answer.status in (404, 405), (path, answer.status)


async def test_an_encoded_slash_makes_no_open_path_of_a_route_added_later(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    data_dir: Path,
    logs: LogCapture,
) -> None:
    """The router matches `/ui%2Flogin` as one segment; the open paths must be read the same way."""
    settings = settings_for(data_dir, read_auth=True)
    app = create_app(settings, redactor=logs.redactor, playbooks=[], operations=FakeOperations())

    async def secret(_request: web.Request) -> web.Response:
        return web.Response(text="incident details")

    app.router.add_get("/{name}", secret)  # some later top-level route
    http = await aiohttp_client(app)
    for raw in ("/ui%2Flogin", "/ui%2fstatic%2Fui.js", "/webhooks%2Fpagerduty"):
        answer = await http.get(URL(raw, encoded=True))
        assert answer.status == 401, (raw, answer.status)
        answer = await http.get(URL(raw, encoded=True), headers=AUTH)
        assert await answer.text() == "incident details", raw  # the route it reaches


async def test_a_sign_in_cookie_is_refused_once_expired_or_after_a_token_rotation(
    make_client: MakeClient,
) -> None:
    now = time.time()
    value = session_value(API_TOKEN, now)
    assert session_valid(value, API_TOKEN, now)
    assert not session_valid(value, API_TOKEN, now + SESSION_SECONDS + 1)
    assert not session_valid(value, "the-rotated-api-token-0123456789", now)
    assert not session_valid(value, "", now)
    expires, _, mac = value.partition(".")
    assert not session_valid(f"{int(expires) + 1}.{mac}", API_TOKEN, now)
    assert not session_valid(f"{expires}.{mac.upper()}", API_TOKEN, now)

    client = await make_client([nothing], read_auth=True)
    # Past Python's 4300-digit limit for `int`: a refusal, not a 500.
    for expiry in ("9" * 5000, "9" * 13, "\u0661" * 10):
        cookie = {"Cookie": f"responder_ui={expiry}.{mac}"}
        answer = await client.http.get("/ui/", headers=cookie)
        assert answer.status == 401, (expiry[:20], answer.status)
