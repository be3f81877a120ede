"""Shared fixtures: a temporary data dir with a real file backend, the real pulumi CLI, a probe target."""

import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from responder.logs import Redactor, configure_logging
from responder.stacks import PulumiEnvironment, StackOperations

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def pulumi_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> PulumiEnvironment:
    # The tests own their backend and passphrase, whatever the developer's shell has set.
    for var in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(var, raising=False)
    return PulumiEnvironment.create(data_dir)


@dataclass
class LogCapture:
    """Every JSON line the process logged while the fixture was active."""

    stream: io.StringIO = field(default_factory=io.StringIO)
    redactor: Redactor = field(default_factory=Redactor)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, object]]:
        return [line for line in self.lines() if line.get("event") == name]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    configure_logging(capture.redactor, stream=capture.stream, json_lines=True, level="DEBUG")
    yield capture
    configure_logging(json_lines=True)


@pytest.fixture
async def stack_ops(
    pulumi_env: PulumiEnvironment, logs: LogCapture
) -> AsyncIterator[StackOperations]:
    ops = StackOperations(pulumi_env, timeout=180, kill_grace=10, redactor=logs.redactor)
    await ops.start()
    yield ops
    await ops.close()


@dataclass
class ProbeTarget:
    """An HTTP endpoint whose answer the test controls, for the burner program's probe."""

    url: str
    status: int = 200


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
