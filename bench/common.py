"""Shared pieces of the benchmarks: servers under test, signed bodies, statistics, machine facts."""

import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from responder.sources import pagerduty

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "pd_v3_incident_triggered.json"
SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
# The intake benchmarks' playbook: a no-op job per trigger, so intake is measured, not Pulumi.
NOOP_PLAYBOOKS = REPO / "bench" / "playbooks"
# A store's jobs not finished yet (either store's SQL).
UNFINISHED = "SELECT COUNT(*) FROM jobs WHERE status IN ('scheduled', 'queued', 'running')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    body: bytes
    signature_hex: str

    def headers(self) -> dict[str, str]:
        # adnanh/webhook cannot parse `v1=`, so its hook reads the same digest from X-Signature.
        return {
            "Content-Type": "application/json",
            "X-Webhook-Id": self.webhook_id,
            "X-PagerDuty-Signature": f"v1={self.signature_hex}",
            "X-Signature": f"sha256={self.signature_hex}",
        }


def deliveries(count: int, incident_prefix: str = "QBENCH") -> list[Delivery]:
    """Signed `incident.triggered` deliveries, each its own webhook id, event and incident."""
    template = json.loads(FIXTURE.read_bytes())
    out = []
    for i in range(count):
        event = template["event"]
        event["id"] = uuid.uuid4().hex
        # Signed events older than the retention are refused as replays: date them now.
        event["occurred_at"] = datetime.datetime.now(datetime.UTC).isoformat()
        event["data"]["id"] = f"{incident_prefix}{i}"
        body = json.dumps(template, separators=(",", ":")).encode()
        out.append(Delivery(f"bench-{uuid.uuid4().hex}", body, pagerduty.sign(body, SECRET)[3:]))
    return out


class Server:
    """A server process under test: started, waited for, measured, stopped."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], ready_url: str, url: str
    ) -> None:
        self.name, self.argv, self.env, self.ready_url, self.url = name, argv, env, ready_url, url
        self.cwd = REPO  # `python -m responder` imports the package found here
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds = 0.0

    async def start(self, log: Path) -> None:
        started = time.monotonic()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < 60 and self.proc.poll() is None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.ready_url) as response:
                        if response.status < 500 or response.status == 405:
                            self.ready_seconds = time.monotonic() - started
                            return
                await asyncio.sleep(0.01)
        tail = log.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready; its output ends:\n{tail}")

    def rss_mb(self, children: bool = False) -> float:
        assert self.proc is not None
        pids = [self.proc.pid] + (descendants(self.proc.pid) if children else [])
        return sum(_rss_kb(pid) for pid in pids) / 1024

    def store_rss_mb(self) -> float:
        """The RSS of the daemon's store process (SQLite's, started beside the daemon)."""
        assert self.proc is not None
        found = [pid for pid in descendants(self.proc.pid) if STORE_PROCESS in _cmdline(pid)]
        return sum(_rss_kb(pid) for pid in found) / 1024

    def pids(self) -> list[int]:
        """The server's process and its descendants."""
        assert self.proc is not None
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def responder_server(data_dir: Path, playbooks: Path, **env: str) -> Server:
    port = free_port()
    environment = {
        **os.environ,
        "RESPONDER_DATA_DIR": str(data_dir),
        "RESPONDER_PORT": str(port),
        "RESPONDER_PAGERDUTY_SECRETS": SECRET,
        "RESPONDER_PLAYBOOKS_DIR": str(playbooks),
        "RESPONDER_LOG_LEVEL": "WARNING",
        # No blast-radius caps: the benchmarks create many stacks for one service.
        "RESPONDER_MAX_LIVE_STACKS": "0",
        "RESPONDER_MAX_STACKS_PER_SERVICE": "0",
        "RESPONDER_MAX_STACKS_PER_PLAYBOOK": "0",
        "RESPONDER_MAX_OPERATIONS_PER_MINUTE": "0",
        **env,
    }
    url = f"http://127.0.0.1:{port}"
    return Server(
        "responder",
        [sys.executable, "-m", "responder", "serve"],
        environment,
        f"{url}/readyz",
        f"{url}/webhooks/pagerduty",
    )


def webhook_server(workdir: Path) -> Server:
    """adnanh/webhook 2.8 with a hook that checks the same HMAC-SHA256 and runs /bin/true."""
    port = free_port()
    hooks = workdir / "hooks.yaml"
    # YAML, not JSON: the file is a Go template first, and JSON's escaped quotes would break it.
    hooks.write_text(HOOKS)
    url = f"http://127.0.0.1:{port}/hooks/pagerduty"
    argv = ["webhook", "-hooks", str(hooks), "-template", "-ip", "127.0.0.1", "-port", str(port)]
    return Server("adnanh/webhook", argv, {**os.environ, "PD_SECRET": SECRET}, url, url)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of these processes and of their children they have reaped."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


STORE_PROCESS = b"responder.store.sqlite.server"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs, and so on."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread (min, max) of several runs."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def machine() -> dict[str, str]:
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    pulumi = subprocess.run(
        [str(Path(sys.executable).parent / "pulumi"), "version"], capture_output=True, text=True
    ).stdout.strip()
    webhook = subprocess.run(["webhook", "-version"], capture_output=True, text=True).stdout.strip()
    # `wrk --version` prints its version before the usage text (and exits 1).
    version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    wrk = version.split("Copyright")[0].strip()
    return {
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pulumi": pulumi,
        "webhook": webhook,
        "wrk": wrk,
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def drained(server: Server) -> None:
    """Wait until the daemon has run every job queued so far."""
    base = server.url.removesuffix("/webhooks/pagerduty")
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{base}/jobs?status=queued&limit=1") as response:
                if not (await response.json())["jobs"]:
                    return
            await asyncio.sleep(0.2)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


HOOKS = """\
- id: pagerduty
  execute-command: /bin/true
  http-methods: [POST]
  response-message: accepted
  success-http-response-code: 202
  trigger-rule-mismatch-http-response-code: 403
  trigger-rule:
    and:
      - match:
          type: payload-hmac-sha256
          secret: '{{ getenv "PD_SECRET" }}'
          parameter: {source: header, name: X-Signature}
      - match:
          type: regex
          regex: '^(incident\\..+|pagey\\.ping)$'
          parameter: {source: payload, name: event.event_type}
"""
