"""A real Prometheus server (Debian's package) on loopback, scraping a daemon every second."""

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import aiohttp

from tests.alertmanager_server import free_port, wait_until_ready

BINARY = "prometheus"


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        """`target`: the daemon's host:port; it is scraped at /metrics every second."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write the config.
        self.config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {"job_name": "responder", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        binary = shutil.which(BINARY)
        assert binary, f"{BINARY} is not installed: run scripts/install-test-services"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await wait_until_ready(f"{self.url}/-/ready", self.proc, self.log_path, 30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def query(self, promql: str) -> list[dict[str, object]]:
        """The instant query's result vector, through Prometheus' own HTTP API."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/query", params={"query": promql}) as response,
        ):
            body = await response.json()
        assert response.status == 200 and body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    async def value(self, promql: str) -> float | None:
        """The single value of an instant query, None when it has no series."""
        result = await self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        value = result[0]["value"]
        assert isinstance(value, list)
        return float(value[1])

    async def wait_for(self, promql: str, minimum: float, timeout: float = 30.0) -> float:
        """Poll the query until its value reaches `minimum`; fail at the deadline."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.value(promql)
            if value is not None and value >= minimum:
                return value
            if asyncio.get_running_loop().time() > deadline:
                targets = await self._targets()
                raise AssertionError(f"{promql} = {value}, wanted >= {minimum}; {targets}")
            await asyncio.sleep(0.5)

    async def _targets(self) -> object:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/targets") as response,
        ):
            return await response.json()
