"""Several `responder serve` nodes for tests: each its own process, port and data dir, sharing one
PostgreSQL database for jobs and one for Pulumi's state, as production nodes on different machines."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.alertmanager_server import free_port
from tests.helpers import API_TOKEN, REPO, SECRET_A, marked_processes, sign

MARKER = (
    "PYTEST_RESPONDER_NODE"  # in every process of a node: killing them all is the machine dying
)
PASSPHRASE = (
    "multinode-passphrase-shared-by-all-nodes"  # what an operator shares, as the README says
)


def backend_url(database_url: str) -> str:
    """Pulumi's DIY PostgreSQL backend on that database (it speaks `postgres://`, no TLS here)."""
    return database_url.replace("postgresql://", "postgres://", 1) + "?sslmode=disable"


class Node:
    def __init__(self, root: Path, name: str, database_url: str, pulumi_database_url: str) -> None:
        self.name = name
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.port = free_port()
        self.database_url = database_url
        self.pulumi_backend = backend_url(pulumi_database_url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.tag = ""
        self.id = ""  # the node id it reports once ready (a new one per start)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **settings: str) -> None:
        self.tag = uuid.uuid4().hex
        env = {
            **os.environ,
            MARKER: self.tag,
            "RESPONDER_DATA_DIR": str(self.data_dir),
            "RESPONDER_PORT": str(self.port),
            "RESPONDER_DATABASE_URL": self.database_url,
            "RESPONDER_PAGERDUTY_SECRETS": SECRET_A,
            "RESPONDER_API_TOKEN": API_TOKEN,
            "RESPONDER_PLAYBOOKS_DIR": str(REPO / "tests" / "multinode_playbooks"),
            "RESPONDER_WORKERS": "2",
            "RESPONDER_PROCESSES": "1",
            "RESPONDER_LEASE_SECONDS": "3",
            "RESPONDER_RETRY_BACKOFF": "0.5",
            "RESPONDER_REAPER_INTERVAL": "0.5",
            # The recorded fixture is dated 2026: older than the default retention.
            "RESPONDER_RETENTION": str(10 * 365 * 86400),
            "PULUMI_BACKEND_URL": self.pulumi_backend,
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            **{f"RESPONDER_{k.upper()}": v for k, v in settings.items()},
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "responder", "serve"],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/readyz") as response:
                    if response.status == 200:
                        self.id = (await response.json())["node"]
                        return
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name} not ready; log:\n{self.tail()}")

    async def deliver(
        self, session: aiohttp.ClientSession, body: bytes, webhook_id: str | None = None
    ) -> int:
        headers = {
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": sign(body, SECRET_A),
            "X-Webhook-Id": webhook_id or uuid.uuid4().hex,
        }
        async with session.post(f"{self.url}/webhooks/pagerduty", data=body, headers=headers) as r:
            return r.status

    def kill_machine(self) -> None:
        """SIGKILL every process of the node (daemon, stack workers, CLIs, plugins) at once."""
        for pid in marked_processes(MARKER, self.tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_machine()
        if self.tag:
            deadline = time.monotonic() + 10  # its workers end with it; never leave one behind
            while marked_processes(MARKER, self.tag) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.kill_machine()

    def tail(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        complete = self.log_path.read_text().rpartition("\n")[0] if self.log_path.exists() else ""
        lines = [json.loads(line) for line in complete.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]
