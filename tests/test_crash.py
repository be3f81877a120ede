"""Crash safety: SIGKILL the daemon while a stack update runs and deliveries arrive, then restart it."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import REPO, SECRET_A, pd_event, sign, until

pytestmark = pytest.mark.pulumi


class DaemonProcess:
    def __init__(self, data_dir: Path, port: int, log_path: Path) -> None:
        self.data_dir, self.port, self.log_path = data_dir, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings: dict[str, str] = {}  # environment over the defaults below, at each start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "RESPONDER_DATA_DIR": str(self.data_dir),
            "RESPONDER_PORT": str(self.port),
            "RESPONDER_PAGERDUTY_SECRETS": SECRET_A,
            "RESPONDER_PLAYBOOKS_DIR": str(REPO / "tests" / "crash_playbooks"),
            "RESPONDER_RETRY_BACKOFF": "0.5",
            # The recorded fixture is dated 2026: older than the default retention, which refuses
            # signed events that old as replays.
            "RESPONDER_RETENTION": str(10 * 365 * 86400),
            "RESPONDER_WORKERS": "2",
            **self.settings,
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
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise AssertionError(f"daemon not ready; log:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_lines(self) -> list[dict[str, object]]:
        """Every complete line (the daemon may be writing the last one while the test reads)."""
        complete = self.log_path.read_text().rpartition("\n")[0]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def daemon(data_dir: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(data_dir, free_port(), tmp_path / "daemon.log")
    yield process
    process.terminate()


async def post(session: aiohttp.ClientSession, url: str, body: bytes, webhook_id: str) -> int:
    headers = {
        "Content-Type": "application/json",
        "X-PagerDuty-Signature": sign(body, SECRET_A),
        "X-Webhook-Id": webhook_id,
    }
    async with session.post(f"{url}/webhooks/pagerduty", data=body, headers=headers) as response:
        return response.status


async def test_sigkill_mid_job_loses_nothing(daemon: DaemonProcess, data_dir: Path) -> None:
    acknowledged: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        daemon.start()
        await daemon.wait_ready(session)
        assert (
            await post(
                session,
                daemon.url,
                pd_event("incident.triggered", "QCRASH", title="sleep 6"),
                "slow",
            )
            == 202
        )

        async def flood() -> None:
            for i in range(10_000):
                webhook_id = f"ack-{i}"
                try:
                    status = await post(
                        session,
                        daemon.url,
                        pd_event("incident.acknowledged", f"QACK{i}"),
                        webhook_id,
                    )
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)  # the daemon is down: not acknowledged, not promised
                    continue
                if 200 <= status < 300:
                    acknowledged.append(webhook_id)
                await asyncio.sleep(0.01)

        flooding = asyncio.create_task(flood())
        # Kill while the CLI holds the stack's lock and is creating the slow resource.
        locks = data_dir / "pulumi-state" / ".pulumi" / "locks"
        await until(
            lambda: (
                any(locks.rglob("*.json"))
                and any(
                    line.get("event") == "pulumi.engine"
                    and line.get("op") == "create"
                    and "Slow" in str(line.get("urn"))
                    for line in daemon.log_lines()
                )
            ),
            "the lock file and the slow resource's create",
            interval=0.1,
        )
        daemon.kill()
        killed_after = len(acknowledged)
        daemon.start()
        await daemon.wait_ready(session)
        await until(
            lambda: len(acknowledged) > killed_after,
            "a delivery acknowledged after the restart",
            interval=0.1,
        )
        flooding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooding
        assert (
            killed_after > 0 and len(acknowledged) > killed_after
        )  # deliveries before and after the crash

        jobs = await _wait_all_final(session, daemon.url)

    by_delivery = {j["delivery_id"]: j for j in jobs}
    missing = [d for d in acknowledged if d not in by_delivery]
    assert missing == []  # every delivery answered 2xx has its job
    slow = by_delivery["slow"]
    assert slow["status"] == "succeeded", slow["error"]
    assert slow["attempts"] == 2  # interrupted once, then retried after the stack was repaired
    assert all(j["status"] == "succeeded" for j in jobs), [
        j for j in jobs if j["status"] != "succeeded"
    ]

    state = data_dir / "pulumi-state" / ".pulumi"
    assert list((state / "locks").rglob("*.json")) == []
    checkpoint = json.loads((state / "stacks" / "crashtest" / "incident-QCRASH.json").read_text())
    assert not checkpoint["checkpoint"]["latest"].get("pending_operations")
    lines = daemon.log_lines()  # every line of both runs is JSON
    assert any(
        line.get("event") == "job.recovering" and line.get("job_id") == slow["id"] for line in lines
    )


async def _wait_all_final(
    session: aiohttp.ClientSession, url: str, timeout: float = 180
) -> list[dict[str, object]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        jobs: list[dict[str, object]] = []
        offset: int | None = 0
        while offset is not None:
            async with session.get(f"{url}/jobs?limit=200&offset={offset}") as response:
                page = await response.json()
            jobs += page["jobs"]
            offset = page["next_offset"]
        if all(j["status"] in ("succeeded", "failed", "coalesced") for j in jobs):
            return jobs
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError([j for j in jobs if j["status"] not in ("succeeded", "failed")])
        await asyncio.sleep(0.3)
