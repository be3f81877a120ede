"""This node's leases on the jobs it runs: renewed while they run; jobs of nodes that are gone taken over."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from responder.health import StoreHealth
from responder.logs import get_logger
from responder.store import Job, Store, StoreUnavailable

log = get_logger("responder.runner")

# A node that shares its store and cannot renew its leases for this share of a lease stops its jobs
# (their processes killed at once): well before the leases expire and another node takes the jobs
# over, so two nodes never run one stack's operations at once. A renewal gets a sixth of a lease to
# answer (a partitioned database may never answer), and after a failure the next comes sooner, so
# the decision falls by three quarters of the lease at the latest.
GIVE_UP_AT = 0.6
ANSWER_WITHIN = 1 / 6
RETRY_AFTER = 1 / 12

Interrupt = Callable[[int, int, str], Awaitable[None]]  # (job id, fence, reason)


class LeaseKeeper:
    """Renews the leases of the jobs this node holds (`fences`) every third of a lease; a job whose
    lease is lost, or about to expire because the store cannot be reached, goes to `interrupt`.

    Beside it, with a shared store, each round: `each_round` (more checks on this node's jobs), then
    the running jobs of nodes whose leases expired are taken over, each handed to `recover` in a task
    of its own.
    Neither loop ends but by `stop`; a failure is logged and the next round tries again."""

    def __init__(
        self,
        store: Store,
        health: StoreHealth,
        clock: Callable[[], float],
        *,
        interrupt: Interrupt,
        recover: Callable[[Job], Coroutine[Any, Any, None]],
        each_round: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.health = health
        self.clock = clock
        self.interrupt = interrupt
        self.recover = recover
        self.each_round = each_round
        self.fences: dict[int, int] = {}  # job id -> the fence of its lease, while held here
        self.recoveries: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._renewed = 0.0  # monotonic time of the last renewal the store took

    def start(self) -> None:
        self._renewed = time.monotonic()
        self._tasks = [asyncio.create_task(self._renewing(), name="leases-renew")]
        if self.store.shared:  # alone, every job of another node was taken over at start
            self._tasks.append(asyncio.create_task(self._taking_over(), name="leases-take-over"))

    async def stop(self) -> None:
        """Stop renewing: only once this node's jobs have ended (a lease let go while its job still
        runs would be taken over under it). Recoveries under way are the runner's to wait for."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hold(self, job: Job) -> None:
        self.fences[job.id] = job.fence

    def release(self, job_id: int) -> None:
        self.fences.pop(job_id, None)

    async def _renewing(self) -> None:
        lease = self.store.lease
        wait = lease / 3
        while True:
            await asyncio.sleep(wait)
            held = dict(self.fences)
            try:
                async with asyncio.timeout(lease * ANSWER_WITHIN):
                    lost = await self.store.renew_leases(held, self.clock())
            except asyncio.CancelledError:
                raise
            except (StoreUnavailable, TimeoutError) as e:
                self.health.failed("leases", str(e) or "the store did not answer in time")
                wait = lease * RETRY_AFTER
                if self.store.shared and time.monotonic() - self._renewed > lease * GIVE_UP_AT:
                    for job_id, fence in held.items():
                        await self._interrupt(job_id, fence, "lease_expiring")
                continue
            except Exception:
                log.exception("runner.lease_error")
                continue
            self._renewed = time.monotonic()
            self.health.recovered("leases")
            wait = lease / 3
            for job_id in lost:
                await self._interrupt(job_id, held[job_id], "lease_lost")

    async def _interrupt(self, job_id: int, fence: int, reason: str) -> None:
        try:
            await self.interrupt(job_id, fence, reason)
        except Exception:  # logged; the other jobs still get theirs
            log.exception("runner.interrupt_failed", job_id=job_id, reason=reason)

    async def _taking_over(self) -> None:
        lease = self.store.lease
        while True:
            await asyncio.sleep(lease / 3)
            try:
                async with asyncio.timeout(lease):
                    await self.each_round()
                    taken = await self.store.take_over(self.clock())
            except asyncio.CancelledError:
                raise
            except (StoreUnavailable, TimeoutError) as e:
                log.warning("runner.take_over_failed", error=str(e) or "timed out")
                continue
            except Exception:
                log.exception("runner.lease_error")
                continue
            for job in taken:
                self.hold(job)
                self.track(asyncio.create_task(self.recover(job), name=f"recover-{job.id}"))

    def track(self, recovery: "asyncio.Task[None]") -> None:
        """A recovery under way, among `recoveries` until it ends (a stop waits for them)."""
        self.recoveries.add(recovery)
        recovery.add_done_callback(self.recoveries.discard)
