"""Shared fixtures: a data dir, stack operations (the real CLI only if marked `pulumi`), a probe."""

import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from responder.daemon import create_app
from responder.logs import configure_logging
from responder.playbook import Playbook
from responder.stacks import PulumiEnvironment, PulumiOperations, StackOperations
from tests.fakes import FakeOperations
from tests.helpers import (
    CASE_VARIABLE,
    SESSION_VARIABLE,
    Client,
    LogCapture,
    ProbeTarget,
    session_processes,
    settings_for,
)
from tests.postgres_server import PostgresServer, fresh_database

LEAK_GRACE = 20.0  # seconds for stragglers, e.g. a worker ending after its daemon was killed


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite() -> Iterator[None]:
    """Fail the suite if a `pulumi`, plugin or worker process it started outlives it.

    Other pytest sessions may run on this machine at the same time: every process this session
    starts inherits its tag in the environment, and only those count.
    """
    tag = uuid.uuid4().hex
    os.environ[SESSION_VARIABLE] = tag
    yield
    deadline = time.monotonic() + LEAK_GRACE
    while (leaked := session_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    del os.environ[SESSION_VARIABLE]
    for pid in leaked:  # ours, and already reported: do not leave them to the next session
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if leaked:
        pytest.fail(f"processes outlived the test session: {leaked}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL cluster for the session, started by the first test that needs it."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database of the session's cluster for one test (its URL carries a password)."""
    async with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> str:
    """A marker in the environment of every process this test starts from now on."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(CASE_VARIABLE, value)
    return value


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def pulumi_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> PulumiEnvironment:
    # The tests own their backend and passphrase, whatever the developer's shell has set.
    for var in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(var, raising=False)
    return PulumiEnvironment.create(data_dir)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    configure_logging(capture.redactor, stream=capture.stream, json_lines=True, level="DEBUG")
    yield capture
    configure_logging(json_lines=True)


@pytest.fixture
async def stack_ops(
    request: pytest.FixtureRequest, pulumi_env: PulumiEnvironment, logs: LogCapture
) -> AsyncIterator[StackOperations]:
    """The real stack operations, for tests marked `pulumi` only: the others must stay fast."""
    if request.node.get_closest_marker("pulumi") is None:
        pytest.fail("stack_ops runs the real pulumi CLI: mark the test `pulumi`", pytrace=False)
    ops = PulumiOperations(pulumi_env, timeout=180, kill_grace=10, redactor=logs.redactor)
    await ops.start()
    yield ops
    await ops.close()


@pytest.fixture
async def probe_target(aiohttp_server: AiohttpServer) -> ProbeTarget:
    target = ProbeTarget(url="")

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(status=target.status, text="probe")

    app = web.Application()
    app.router.add_get("/health", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    target.url = str(server.make_url("/health"))
    return target


@pytest.fixture
def fake_ops() -> FakeOperations:
    """The in-memory stack operations of a test, shared by every daemon it starts (like the
    backend on disk the real CLI would use)."""
    return FakeOperations()


@pytest.fixture
def make_client(
    request: pytest.FixtureRequest,
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    data_dir: Path,
    logs: LogCapture,
    pulumi_env: PulumiEnvironment,
    fake_ops: FakeOperations,
) -> Callable[..., Awaitable[Client]]:
    """A daemon app and its client. Only a test marked `pulumi` gets the real CLI; others get
    `fake_ops`."""
    real = request.node.get_closest_marker("pulumi") is not None

    async def make(
        playbooks: list[Playbook] | None = None,
        clock: Callable[[], float] | None = None,
        **overrides: object,
    ) -> Client:
        settings = settings_for(data_dir, **overrides)
        app = create_app(
            settings,
            redactor=logs.redactor,
            playbooks=playbooks,
            clock=clock or time.time,
            operations=None if real else fake_ops,
        )
        return Client(await aiohttp_client(app), app)

    return make
