"""Test helpers shared by the suite and the benchmarks: constants, signing, clients, clocks."""

import asyncio
import contextlib
import ctypes
import inspect
import io
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from responder.config import Settings
from responder.daemon import create_app
from responder.events import Event
from responder.logs import Redactor
from responder.sources import pagerduty
from responder.store import Job, JobStatus
from responder.store.sqlite import SQLiteStore
from responder.store.sqlite.process import SQLiteProcessStore
from responder.web.app import server_options
from responder.web.daemon import DAEMON, Daemon

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
SESSION_VARIABLE = "PYTEST_RESPONDER_SESSION"  # not RESPONDER_*: settings refuse unknown ones

SECRET_A = "fixture-secret-A-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJK"
SECRET_B = "fixture-secret-B-ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgf"
API_TOKEN = "test-api-token-0123456789"


# Set by the `case` fixture: every process a test starts inherits it (see marked_processes).
CASE_VARIABLE = "PYTEST_RESPONDER_CASE"


def marked_processes(variable: str, value: str) -> dict[int, list[str]]:
    """pid → argv of each live process whose environment holds `variable=value`; children inherit
    it, so this finds every process started after the variable was set, whatever its parent."""
    entry = f"{variable}={value}".encode()
    found = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()  # empty for a zombie
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pid != os.getpid() and entry in environ.split(b"\0"):
            found[pid] = cmdline.decode(errors="replace").rstrip("\0").split("\0")
    return found


def signal_another_thread(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to one of `pid`'s threads other than its main one (`tgkill`), as the kernel may
    deliver a signal sent to the whole process."""
    others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert others, f"process {pid} has no thread but its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(pid, others[-1], sig) == 0, os.strerror(ctypes.get_errno())


def session_processes(tag: str) -> dict[int, str]:
    """pid → command line of each live `pulumi`, plugin or stack worker process of this session."""
    found = {}
    for pid, args in marked_processes(SESSION_VARIABLE, tag).items():
        program = os.path.basename(args[0])
        if (
            program == "pulumi"
            or program.startswith("pulumi-")  # language hosts, provider plugins
            or "responder.stacks.dynamic_provider" in args  # the dynamic-provider plugin
            or "responder.language_host" in args  # ours, started by its launcher
            or "responder.stacks.worker" in args
        ):
            found[pid] = " ".join(args)
    return found


def bare_event(**data: object) -> Event:
    """An event carrying nothing but `data`, for store tests where the event's content is opaque."""
    return Event(
        id="evt", source="pagerduty", type="incident.triggered", resource_type="incident", data=data
    )


@dataclass
class LogCapture:
    """Every JSON line the process logged while the fixture was active."""

    stream: io.StringIO = field(default_factory=io.StringIO)
    redactor: Redactor = field(default_factory=Redactor)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, object]]:
        # On "\n" alone: str.splitlines() also breaks at U+2028, which a JSON line may carry.
        return [json.loads(line) for line in self.text.split("\n") if line.strip()]

    def events(self, name: str) -> list[dict[str, object]]:
        return [line for line in self.lines() if line.get("event") == name]


@dataclass
class ProbeTarget:
    """An HTTP endpoint whose answer the test controls, for the burner program's probe."""

    url: str
    status: int = 200


def sign(body: bytes, *secrets: str) -> str:
    """An X-PagerDuty-Signature header for the body, one `v1=` entry per secret."""
    return ",".join(pagerduty.sign(body, s) for s in secrets)


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "data_dir": data_dir,
        "pagerduty_secrets": (SECRET_A,),
        "api_token": API_TOKEN,
        "workers": 2,
        "job_timeout": 240.0,
        "retry_backoff": 0.2,
        "shutdown_grace": 20.0,
        # The recorded fixtures are dated 2026 and FakeClock starts in 2027: beyond the default
        # retention, which refuses signed events that old (a replay). Tests of that rule set it.
        "retention": 10 * 365 * 86400.0,
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


@dataclass
class Client:
    """A test client for a running daemon app, with helpers to post signed deliveries."""

    http: TestClient  # type: ignore[type-arg]
    app: web.Application

    @property
    def daemon(self) -> Daemon:
        return self.app[DAEMON]

    @property
    def store(self) -> SQLiteStore:
        """The daemon's store: the SQLite store in its process, typed as the SQLite store whose
        extras (path, delivery ids) tests read, which the process store forwards."""
        store = self.daemon.store
        assert isinstance(store, SQLiteProcessStore)
        return cast(SQLiteStore, store)

    async def deliver(
        self,
        body: bytes,
        webhook_id: str | None = None,
        *,
        secret: str = SECRET_A,
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        sent = {"Content-Type": "application/json", "X-PagerDuty-Signature": sign(body, secret)}
        if webhook_id:
            sent["X-Webhook-Id"] = webhook_id
        return await self.http.post(
            "/webhooks/pagerduty", data=body, headers={**sent, **(headers or {})}
        )

    async def wait_for_jobs(
        self,
        timeout: float = 180.0,
        settled: tuple[JobStatus, ...] = (),
        *,
        incident_id: str | None = None,
        status: JobStatus | None = None,
    ) -> list[Job]:
        """Wait until every job (matching the filters) is final, or in one of the `settled` statuses."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            jobs = await self.daemon.store.list_jobs(
                limit=1000, incident_id=incident_id, status=status
            )
            if jobs and all(j.status.final or j.status in settled for j in jobs):
                return jobs
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"jobs not final after {timeout}s: {[(j.id, j.status) for j in jobs]}"
                )
            await asyncio.sleep(0.2)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def pd_event(
    event_type: str,
    incident_id: str = "QTEST0001",
    *,
    event_id: str | None = None,
    occurred_at: str | None = None,
    **data: object,
) -> bytes:
    """A compact V3 webhook body for an incident event, based on the triggered fixture."""
    document = json.loads(fixture_bytes("pd_v3_incident_triggered.json"))
    event = document["event"]
    event["event_type"] = event_type
    if occurred_at is not None:
        event["occurred_at"] = occurred_at
    event["id"] = event_id or f"evt-{event_type}-{incident_id}-{uuid.uuid4().hex[:8]}"
    event["data"].update({"id": incident_id, "status": event_type.split(".")[-1], **data})
    return json.dumps(document).encode()


class FakeClock:
    """Wall-clock time the test moves by hand; everything time-based in the daemon reads it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def served(settings: Settings, logs: LogCapture) -> AsyncIterator[int]:
    """The daemon on a real listening socket, with the server options `responder serve` uses."""
    runner = web.AppRunner(create_app(settings, redactor=logs.redactor), **server_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    timeout: float = 60,
    interval: float = 0.01,
) -> None:
    """Wait for `condition` (a function or a coroutine function), polling every `interval` s; fail
    naming `what` if it does not hold within `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        held = condition()
        if await held if inspect.isawaitable(held) else held:
            return
        assert asyncio.get_running_loop().time() < deadline, f"never within {timeout:g}s: {what}"
        await asyncio.sleep(interval)
