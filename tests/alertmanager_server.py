"""A real Prometheus Alertmanager (Debian's package) on loopback, configured to notify a daemon."""

import asyncio
import contextlib
import datetime
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

BINARY = "prometheus-alertmanager"


async def wait_until_ready(
    url: str, proc: "subprocess.Popen[bytes]", log_path: Path, seconds: float
) -> None:
    """Poll a server's readiness `url` until it answers 200; fail with the server's log if it
    exits first or is not ready within `seconds`."""
    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds * 10)):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
    raise AssertionError(log_path.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Alertmanager:
    def __init__(
        self, workdir: Path, daemon_url: str, routing_key: str, token: str, repeat: str = "2s"
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.config = workdir / "alertmanager.yml"
        # JSON is YAML: no YAML library needed to write the config.
        self.config.write_text(
            json.dumps(
                {
                    "route": {
                        "receiver": "responder",
                        "group_by": ["alertname"],
                        "group_wait": "0s",
                        "group_interval": "1s",
                        "repeat_interval": repeat,
                    },
                    "receivers": [
                        {
                            "name": "responder",
                            "pagerduty_configs": [
                                {
                                    "routing_key": routing_key,
                                    "url": f"{daemon_url}/v2/enqueue",
                                    "send_resolved": True,
                                }
                            ],
                            "webhook_configs": [
                                {
                                    "url": f"{daemon_url}/webhooks/alertmanager",
                                    "send_resolved": True,
                                    "http_config": {
                                        "authorization": {"type": "Bearer", "credentials": token}
                                    },
                                }
                            ],
                        }
                    ],
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        binary = shutil.which(BINARY)
        assert binary, f"{BINARY} is not installed: run scripts/install-test-services"
        log = (self.workdir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        await wait_until_ready(
            f"{self.url}/-/ready", self.proc, self.workdir / "alertmanager.log", 10
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    async def post_alert(
        self, labels: dict[str, str], *, resolved: bool = False, **extra: Any
    ) -> None:
        """Fire (or resolve, with endsAt in the past) an alert through Alertmanager's own API."""
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": "p99 latency above 2s"},
            "generatorURL": "http://prometheus.test/graph",
            **extra,
        }
        if resolved:
            alert["endsAt"] = (
                datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
            ).isoformat()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/api/v2/alerts", json=[alert]) as r,
        ):
            assert r.status == 200, await r.text()
