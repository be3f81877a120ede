"""A Python closed-loop load (fixed concurrency), where a benchmark needs steady traffic rather than a
measure of intake (the log cost, the footprint); intake is measured with wrk and vegeta."""

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from bench.common import Delivery


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # webhook ids answered 2xx

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    delivery: Delivery,
    result: LoadResult,
) -> None:
    result.sent += 1
    started = time.monotonic()
    try:
        async with session.post(url, data=delivery.body, headers=delivery.headers()) as response:
            await response.read()
            ok = 200 <= response.status < 300
    except aiohttp.ClientError:
        ok = False
    result.latencies_ms.append((time.monotonic() - started) * 1000)
    if ok:
        result.ok += 1
        result.acknowledged.append(delivery.webhook_id)
    else:
        result.errors += 1


async def closed_loop(
    url: str, pool: list[Delivery], concurrency: int, seconds: float
) -> LoadResult:
    """`concurrency` clients each send the next delivery as soon as the last was answered."""
    result = LoadResult()
    queue = iter(pool)
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            delivery = next(queue, None)
            if delivery is None:
                return
            await _send(session, url, delivery, result)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        result.seconds = time.monotonic() - started
    return result
