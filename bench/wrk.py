"""wrk, the compiled load generator, replaying a pool of pre-signed, distinct PagerDuty deliveries."""

import asyncio
import datetime
import hashlib
import hmac
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import FIXTURE, SECRET

LUA = Path(__file__).with_name("intake.lua")
# Far above what either server answers here (adnanh/webhook: ≈ 8,000/s), so no run exhausts its pool.
POOL_RATE = 15_000


def write_pool(path: Path, count: int, prefix: str = "QWRK") -> None:
    """`count` signed `incident.triggered` deliveries, one a line: webhook id, signature, body.

    Each has its own webhook id, event id and incident; the body is compact JSON, so no raw tab or
    newline occurs in it. Dated now: signed events older than the retention are refused as replays.
    """
    template = json.loads(FIXTURE.read_bytes())
    template["event"]["id"] = "@EVENT@"
    template["event"]["occurred_at"] = datetime.datetime.now(datetime.UTC).isoformat()
    template["event"]["data"]["id"] = "@INCIDENT@"
    head, rest = json.dumps(template, separators=(",", ":")).encode().split(b"@EVENT@")
    middle, tail = rest.split(b"@INCIDENT@")
    key = SECRET.encode()
    run = uuid.uuid4().hex[:8]
    with path.open("wb") as out:
        for i in range(count):
            body = b"".join(
                (head, uuid.uuid4().hex.encode(), middle, f"{prefix}{run}-{i}".encode(), tail)
            )
            signature = hmac.new(key, body, hashlib.sha256).hexdigest()
            out.write(f"bench-{run}-{i}\t{signature}\t".encode() + body + b"\n")


@dataclass
class WrkRun:
    """One wrk run's figures, from the script's `done()` summary."""

    requests: int
    seconds: float
    ok: int
    non_2xx: int
    socket_errors: int
    duplicates: int
    wrapped: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    acknowledged: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """2xx answers per second."""
        return self.ok / self.seconds


def core_for_load() -> int | None:
    """The core wrk is pinned to (the last one this process may use), or None if pinning is
    impossible (one core, or no `taskset`)."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[-1] if len(cores) > 1 and shutil.which("taskset") else None


def wrk_argv(url: str, threads: int, connections: int, seconds: float) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    argv += ["-s", str(LUA), url]
    core = core_for_load()
    return argv if core is None else ["taskset", "-c", str(core), *argv]


async def run_wrk(
    url: str, pool: Path, work: Path, threads: int, connections: int, seconds: float
) -> WrkRun:
    """Run wrk against `url` with the deliveries of `pool`; its output is kept in `work`."""
    acks = work / "acknowledged.txt"
    env = {**os.environ, "WRK_POOL": str(pool), "WRK_ACKS": str(acks), "WRK_THREADS": str(threads)}
    proc = await asyncio.create_subprocess_exec(
        *wrk_argv(url, threads, connections, seconds),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    (work / "wrk.txt").write_text(text)
    lines = [line for line in text.splitlines() if line.startswith("WRK_SUMMARY ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text[-2000:]}")
    s = json.loads(lines[-1].removeprefix("WRK_SUMMARY "))
    return WrkRun(
        requests=s["requests"],
        seconds=s["duration_us"] / 1e6,
        ok=s["ok"],
        non_2xx=s["non_2xx"],
        socket_errors=s["connect_errors"] + s["read_errors"] + s["write_errors"] + s["timeouts"],
        duplicates=s["duplicates"],
        wrapped=s["wrapped"],
        p50_ms=s["p50_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        max_ms=s["max_us"] / 1000,
        acknowledged=acks.read_text().split(),
    )
