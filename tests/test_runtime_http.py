"""The daemon as served: slow senders are cut off, files are private, finished records expire."""

import asyncio
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from responder.config import Settings
from responder.playbook import Context, on, playbook
from responder.stacks import PulumiEnvironment
from responder.store import JobStatus
from tests.helpers import Client, FakeClock, LogCapture, pd_event, served, settings_for

MakeClient = Callable[..., Awaitable[Client]]


async def exchange(port: int, data: bytes, timeout: float = 20.0) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes; returns what came back and how long it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = asyncio.get_running_loop().time()
    writer.write(data)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        pytest.fail(f"the server still held the connection after {timeout}s")
    finally:
        writer.close()
    return answer, asyncio.get_running_loop().time() - started


async def test_a_body_that_stalls_halfway_gets_408_and_a_closed_connection(
    data_dir: Path, logs: LogCapture, pulumi_env: PulumiEnvironment
) -> None:
    token = "alertmanager-token-0123456789"
    settings = settings_for(
        data_dir, body_timeout=1.0, header_timeout=30.0, alertmanager_token=token
    )
    head = (
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
    )
    async with served(settings, logs) as port:
        for path in ("/webhooks/pagerduty", "/v2/enqueue", "/webhooks/alertmanager"):
            answer, took = await exchange(port, head.format(path=path).encode() + b'{"a": "' * 7)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b'"status": 408' in answer and 1.0 <= took < 10.0
    assert len(logs.events("http.body_timeout")) == 3


async def test_headers_that_never_end_get_a_closed_connection(
    data_dir: Path, logs: LogCapture, pulumi_env: PulumiEnvironment
) -> None:
    settings = settings_for(data_dir, header_timeout=1.0)
    async with served(settings, logs) as port:
        answer, took = await exchange(port, b"POST /v2/enqueue HTTP/1.1\r\nHost: localhost\r\n")
        assert answer == b"" and 1.0 <= took < 10.0
        answer, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")  # a prompt client is served as ever


@pytest.mark.pulumi  # the files the real CLI, program and exports write
async def test_what_the_daemon_writes_is_private(make_client: MakeClient, data_dir: Path) -> None:
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Ups the burner stack."""
        await ctx.stack.set_config({"scratch_root": ctx.params["scratch_root"]})
        await ctx.stack.up()

    @playbook(allow_destroy=True)
    @on("incident.resolved")
    async def teardown(ctx: Context) -> None:
        """Destroys it, leaving a postmortem export."""
        await ctx.stack.destroy()

    data_dir.chmod(0o755)  # left as it is (with a warning): what the daemon writes is private
    before = set(data_dir.rglob("*"))  # what the test's fixtures made (the Pulumi environment)
    client = await make_client([provision, teardown], alertmanager_token="")
    await client.deliver(pd_event("incident.triggered", "QMODE"), "mode-t")
    scratch = data_dir / "scratch"
    await client.wait_for_jobs()
    assert any(scratch.rglob("context.json"))
    exposed = [p for p in scratch.rglob("*") if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert exposed == []
    await client.deliver(pd_event("incident.resolved", "QMODE"), "mode-r")
    assert all(j.status == JobStatus.SUCCEEDED for j in await client.wait_for_jobs())

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o755
    made = set(data_dir.rglob("*")) - before
    names = {p.name for p in made}
    assert {"responder.db", "alertmanager-token", "events-v2-routing-key"} <= names
    assert any(p.parent.name == "postmortem" for p in made)
    assert any(p.parent.name == "workspaces" for p in made)
    exposed = [p for p in made if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert exposed == []


# FakeClock's start, as a signed event's `occurred_at`: fresh for a daemon on that clock.
FAKE_START = "2027-01-15T08:00:00Z"


async def test_finished_records_older_than_the_retention_are_pruned(
    make_client: MakeClient, logs: LogCapture
) -> None:
    @on("incident.triggered")
    async def now(_ctx: Context) -> None:
        """Runs at once."""

    @playbook(delay=10_000)
    @on("incident.acknowledged")
    async def later(_ctx: Context) -> None:
        """Waits, scheduled, far longer than the retention."""

    clock = FakeClock()
    client = await make_client([now, later], clock=clock, retention=100.0, reaper_interval=3600)
    await client.deliver(pd_event("incident.triggered", "QOLD", occurred_at=FAKE_START), "old-t")
    await client.deliver(pd_event("incident.acknowledged", "QOLD", occurred_at=FAKE_START), "old-a")
    jobs = await client.wait_for_jobs(settled=(JobStatus.SCHEDULED,))
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SCHEDULED]

    clock.advance(50)
    await client.daemon.reaper.run_once(prune=True)
    assert len(await client.daemon.store.list_jobs()) == 2  # not old enough yet

    clock.advance(100)
    await client.daemon.reaper.run_once(prune=True)
    [kept] = await client.daemon.store.list_jobs()
    assert kept.id == jobs[1].id and kept.status == JobStatus.SCHEDULED  # never anything unfinished
    assert (await client.http.get(f"/jobs/{jobs[0].id}")).status == 404
    assert logs.events("store.pruned")


def test_retention_and_timeouts_are_settings() -> None:
    settings = Settings.load(
        {
            "RESPONDER_RETENTION": "3600",
            "RESPONDER_HEADER_TIMEOUT": "5",
            "RESPONDER_BODY_TIMEOUT": "7.5",
        }
    )
    assert (settings.retention, settings.header_timeout, settings.body_timeout) == (3600, 5, 7.5)
    assert Settings.load({}).retention == 30 * 86400
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="RESPONDER_RETENTION"):
            Settings.load({"RESPONDER_RETENTION": bad})
