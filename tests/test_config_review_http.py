"""Attacker review: a malformed request costs one short log line; system playbooks never run by hand."""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from responder.lifecycle import SYSTEM_PLAYBOOKS
from responder.playbook import Context, on
from responder.stacks import PulumiEnvironment
from tests.helpers import API_TOKEN, Client, LogCapture, served, settings_for

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PADDING = "A" * 7000  # a request line near aiohttp's limit, which its error message would quote
MALFORMED = {  # aiohttp's error message quotes the padded line, but for the duplicate header
    "bad content-length": f"POST /v2/enqueue HTTP/1.1\r\nHost: t\r\n"
    f"Content-Length: 12{PADDING}\r\n\r\n".encode(),
    "raw byte in the path": f"GET /\xff{PADDING} HTTP/1.1\r\nHost: t\r\n\r\n".encode("latin-1"),
    "duplicate content-length": f"POST /webhooks/pagerduty?{PADDING} HTTP/1.1\r\nHost: t\r\n"
    "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}".encode(),
    "control character in a header": f"GET /healthz HTTP/1.1\r\nHost: t\r\n"
    f"X-A: {PADDING}\x01\r\n\r\n".encode(),
}


async def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes; what came back before the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


def server_lines(logs: LogCapture) -> list[dict[str, object]]:
    return [line for line in logs.lines() if line.get("logger") == "aiohttp.server"]


async def test_each_malformed_request_logs_one_short_warning(
    data_dir: Path, logs: LogCapture, pulumi_env: PulumiEnvironment
) -> None:
    async with served(settings_for(data_dir), logs) as port:
        for what, request in MALFORMED.items():
            before = len(server_lines(logs))
            answer = await exchange(port, request)
            assert answer.split(b" ", 2)[1] == b"400", (what, answer[:200])
            [line] = server_lines(logs)[before:]
            assert line["event"] == "http.bad_request" and line["level"] == "warning", what
            assert line["status"] == 400 and line["remote"] == "127.0.0.1", what
            assert isinstance(line["error"], str) and 0 < len(line["error"]) <= 203, what
            assert "exception" not in line and len(json.dumps(line)) < 600, what
    assert "Traceback" not in logs.text and PADDING[:300] not in logs.text


@pytest.mark.parametrize(
    "token",
    [
        "tok\\en-" + "7" * 24,  # a bytes repr doubles the backslash: the redactor cannot match it
        "T" + "0123456789abcdef" * 16,  # longer than the error kept: cut inside the token
    ],
    ids=["backslash", "long"],
)
async def test_a_malformed_request_quoting_a_secret_logs_none_of_it(
    data_dir: Path, logs: LogCapture, pulumi_env: PulumiEnvironment, token: str
) -> None:
    """aiohttp's error quotes the header it could not parse: here the API token's, sent with a
    stray CR (as from a token file with a Windows line end). Its description is logged, not it."""
    async with served(settings_for(data_dir, api_token=token), logs) as port:
        request = f"GET /jobs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\r\n\r\n"
        answer = await exchange(port, request.encode())
        assert answer.split(b" ", 2)[1] == b"400", answer[:200]
    [line] = server_lines(logs)
    assert line["event"] == "http.bad_request"
    assert line["error"] == "Missing expected LF after header value:"
    assert token[:8] not in logs.text and token[-8:] not in logs.text


async def test_a_header_line_too_long_is_logged_without_its_start(
    data_dir: Path, logs: LogCapture, pulumi_env: PulumiEnvironment
) -> None:
    """aiohttp quotes the first 100 bytes of a line too long in its error's first line: here
    another application's session cookie, which the browser sends to every port of localhost."""
    cookie = "sessionid=OTHER-APP-SESSION-SECRET; " + "x" * 9000
    async with served(settings_for(data_dir), logs) as port:
        request = f"GET /healthz HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n"
        answer = await exchange(port, request.encode())
        assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:200]
    [line] = server_lines(logs)
    assert line["event"] == "http.bad_request"
    assert str(line["error"]).startswith("Got more than") and str(line["error"]).endswith("….")
    assert "OTHER-APP" not in logs.text


async def test_real_server_errors_are_logged_in_full(
    aiohttp_server: AiohttpServer, logs: LogCapture
) -> None:
    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    app = web.Application()
    app.router.add_get("/", broken)
    server = await aiohttp_server(app)
    answer = await exchange(
        server.port or 0, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 500 ")
    [line] = server_lines(logs)
    assert line["level"] == "error" and str(line["event"]).startswith("Error handling request")
    assert "RuntimeError: a bug in a handler" in str(line["exception"])


async def test_bad_requests_are_dropped_below_the_configured_level(
    aiohttp_server: AiohttpServer, logs: LogCapture
) -> None:
    logging.getLogger().setLevel(logging.ERROR)  # RESPONDER_LOG_LEVEL=ERROR; `logs` resets it
    server = await aiohttp_server(web.Application())
    answer = await exchange(server.port or 0, MALFORMED["bad content-length"])
    assert answer.split(b" ", 2)[1] == b"400"
    assert server_lines(logs) == []


async def test_system_playbooks_cannot_be_run_by_hand(make_client: MakeClient) -> None:
    @on("incident.triggered")
    async def probe(_ctx: Context) -> None:
        """An operator's playbook."""

    client = await make_client([probe])
    assert "reap_stack" in {p.name for p in SYSTEM_PLAYBOOKS}
    for system in SYSTEM_PLAYBOOKS:
        response = await client.http.post(
            f"/playbooks/{system.name}/run", json={"incident_id": "QVICTIM"}, headers=AUTH
        )
        assert response.status == 404
        assert (await response.json())["error"] == f"no playbook named {system.name!r}"
    assert await client.daemon.store.list_jobs() == []
    listed = await (await client.http.get("/playbooks")).json()
    assert [p["name"] for p in listed["playbooks"]] == ["probe"]
    ran = await client.http.post("/playbooks/probe/run", headers=AUTH)
    assert ran.status == 202  # the operator's own still run by hand
