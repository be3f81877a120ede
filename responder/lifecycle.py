"""Stack lifecycle enforcement: idle TTLs, maximum ages, failed stacks, approval timeouts, the
orphan sweep and the retention of finished records.

Deadlines live in the store, not in timers: each pass (`run_once`) reads them afresh, so a restart
loses nothing. Expired stacks are destroyed by `reap_stack` jobs that queue like any other job. A
stack whose reaps keep failing is reaped again after a growing wait, read from its failed reap jobs,
and after `reap_attempts` failures in a row no more: it is marked `stuck` and reported.
"""

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from itertools import takewhile
from typing import Literal

from responder import metrics
from responder.enqueue import Deps, Run, enqueue
from responder.events import Event, Incident
from responder.health import StoreHealth
from responder.logs import get_logger
from responder.playbook import Context, Playbook, manual, playbook
from responder.sources import Arrival
from responder.stacks import StackError, StackOperations
from responder.store import (
    Job,
    JobStatus,
    StackRecord,
    StackStatus,
    Store,
    StoreUnavailable,
)

log = get_logger("responder.lifecycle")

REAP_EVENT = "responder.reap"
PRUNE_INTERVAL = 3600.0  # seconds between two prunes of records older than the retention


# No trigger: the reaper enqueues it itself, for one stack, after its own checks.
@playbook(allow_destroy=True)
@manual
async def reap_stack(ctx: Context) -> None:
    """Destroy and remove a burner stack whose time is up (idle, too old, failed, or orphaned)."""
    ctx.log.warning("stack.reaping", reason=ctx.event.data.get("reason"))
    await ctx.stack.destroy(remove=True, missing_ok=True)  # recorded as destroyed either way


SYSTEM_PLAYBOOKS: list[Playbook] = [reap_stack]


class Reaper:
    def __init__(
        self,
        store: Store,
        ops: StackOperations,
        programs: Mapping[str, str],
        *,
        notify: Callable[[], None],
        max_attempts: int,
        approval_timeout: float,
        orphans: Literal["destroy", "report"] = "destroy",
        orphan_age: float = 86400.0,
        interval: float = 30.0,
        orphan_interval: float = 600.0,
        retention: float = 30 * 86400.0,
        reap_attempts: int = 5,
        reap_backoff: float = 300.0,
        clock: Callable[[], float] = time.time,
        health: StoreHealth | None = None,
    ) -> None:
        self.store = store
        self.ops = ops
        self.programs = dict(programs)  # project -> program, for the projects our playbooks deploy
        self.notify = notify
        self.max_attempts = max_attempts
        self.approval_timeout = approval_timeout
        self.orphans = orphans
        self.orphan_age = orphan_age
        self.interval = interval
        self.orphan_interval = orphan_interval
        self.retention = retention
        self.reap_attempts = reap_attempts  # failed reaps in a row before a stack is left stuck
        self.reap_backoff = reap_backoff  # seconds after the first failed reap; doubles each time
        self.clock = clock
        self.health = health or StoreHealth()
        self._last_sweep = 0.0
        self._last_prune = -math.inf  # the first pass prunes
        self._pass = asyncio.Lock()  # one pass at a time, so a stack never gets two reaps
        self._task: asyncio.Task[None] | None = None
        self._leading_now: bool | None = None

    def start(self) -> None:
        self._last_sweep = time.monotonic()  # the first sweep comes one interval after start
        self._task = asyncio.create_task(self._loop(), name="reaper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        """Never ends but by cancellation; while the store fails, passes are retried sooner and the
        failure shows in readiness."""
        while True:
            delay = self.interval
            try:
                if not await self._leading():
                    self.health.recovered("reaper")  # the store answered: nothing to wait for
                    await asyncio.sleep(delay)
                    continue
                await self.run_once(
                    sweep=time.monotonic() - self._last_sweep >= self.orphan_interval,
                    prune=time.monotonic() - self._last_prune >= PRUNE_INTERVAL,
                )
            except StoreUnavailable as e:
                self.health.failed("reaper", str(e))
                delay = min(self.interval, self.health.max_delay)
            except Exception:
                log.exception("reaper.pass_failed")
            else:
                self.health.recovered("reaper")
            await asyncio.sleep(delay)

    async def _leading(self) -> bool:
        """Whether this node leads: of the nodes sharing a store, one runs the reaper's passes; when
        it dies (its lock with it), the next to ask takes over."""
        leading = await self.store.lead()
        if leading != self._leading_now:
            log.info("reaper.leading" if leading else "reaper.standby", node=self.store.node)
            self._leading_now = leading
        return leading

    async def run_once(self, *, sweep: bool = False, prune: bool = False) -> list[int]:
        """One pass; returns the ids of the reap jobs it queued."""
        async with self._pass:
            now = self.clock()
            for job_id in await self.store.expired_approvals(now - self.approval_timeout):
                decision = await self.store.decide(
                    job_id, False, now, f"approval timed out after {self.approval_timeout:g}s"
                )
                if decision is None or not decision.made:
                    continue  # decided by a person (or deleted) since the listing
                metrics.job_ended_by(decision.job, now)
                log.warning("job.rejected", job_id=job_id, reason="approval timed out")
            if stalled := await self.store.unpark_stalled():
                log.error(
                    "queue.unparked",
                    job_ids=stalled,
                    reason="parked behind no job: each should have been unparked as the one"
                    " before it left (a bug; they run now)",
                )
                self.notify()
            queued: list[int] = []
            for listed in await self.store.list_stacks():
                if _expired(listed, now) is None:
                    continue
                if await self.store.pending_jobs_for(listed.project, listed.stack):
                    continue
                # Read again now that no job is pending: the listing may predate the last job's end
                # (a stack listed `provisioning` may be live by now).
                record = await self.store.get_stack(listed.project, listed.stack)
                reason = _expired(record, now) if record is not None else None
                if (
                    record is not None
                    and reason is not None
                    and await self._may_reap(record.project, record.stack, record, now)
                ):
                    queued.append(
                        await self._reap(record.project, record.stack, record.incident_id, reason)
                    )
            if sweep:
                self._last_sweep = time.monotonic()
                queued += await self._sweep(now)
            if prune:
                self._last_prune = time.monotonic()
                await self._prune(now)
            if queued:
                self.notify()
            return queued

    async def _prune(self, now: float) -> None:
        """Delete finished deliveries, jobs and steps older than the retention (never unfinished)."""
        deleted = await self.store.prune(now - self.retention)
        if any(deleted.values()):
            log.info("store.pruned", retention_seconds=self.retention, **deleted)

    async def _sweep(self, now: float) -> list[int]:
        """Burner stacks in the backend that no live incident owns."""
        queued: list[int] = []
        for project, program in self.programs.items():
            try:
                names = await self.ops.list_stacks(project, program)
            except StackError as e:
                log.error("orphans.list_failed", project=project, error=str(e))
                continue
            for name in names:
                record = await self.store.get_stack(project, name)
                reason = _orphaned(record, now, self.orphan_age)
                if reason is None or await self.store.pending_jobs_for(project, name):
                    continue
                if self.orphans == "report":
                    log.warning(
                        "stack.orphan",
                        project=project,
                        stack=name,
                        reason=reason,
                        action="reported",
                    )
                    continue
                if not await self._may_reap(project, name, record, now):
                    continue
                incident_id = record.incident_id if record else ""
                queued.append(await self._reap(project, name, incident_id, reason))
        return queued

    async def _may_reap(
        self, project: str, stack: str, record: StackRecord | None, now: float
    ) -> bool:
        """Whether to queue a reap now: not until `reap_backoff` (doubled for each failure before
        it) has passed since the last failed reap, and never after `reap_attempts` in a row."""
        failures = await self._failed_reaps(project, stack)
        if len(failures) >= self.reap_attempts:
            await self._give_up(project, stack, record, failures)
            return False
        if not failures:
            return True
        wait = self.reap_backoff * 2.0 ** (len(failures) - 1)
        return now >= (failures[0].finished_at or 0.0) + wait

    async def _failed_reaps(self, project: str, stack: str) -> list[Job]:
        """The stack's reap jobs that failed since its last job that did not, newest first, up to
        `reap_attempts` (enough to decide). Read from the job records, so a restart forgets
        nothing."""
        latest = await self.store.latest_jobs_of(project, stack, self.reap_attempts)
        return list(
            takewhile(
                lambda job: job.playbook == reap_stack.name and job.status == JobStatus.FAILED,
                latest,
            )
        )

    async def _give_up(
        self, project: str, stack: str, record: StackRecord | None, failures: list[Job]
    ) -> None:
        """Stop reaping the stack: mark it stuck (which also keeps it out of later passes, so this is
        reported once) and say so. A stack without a record has nowhere to keep the mark: it is
        reported on every sweep, as `orphans=report` does."""
        if record is not None:
            await self.store.touch_stack(
                project,
                stack,
                operation="reap_abandoned",
                now=self.clock(),
                status=StackStatus.STUCK,
            )
        log.error(
            "stack.reap_abandoned",
            project=project,
            stack=stack,
            incident_id=record.incident_id if record else None,
            failed_reaps=len(failures),
            job_ids=[j.id for j in failures],
            error=failures[0].error,
            action="no more reaps: destroy it once its problem is fixed",
        )

    async def _reap(self, project: str, stack: str, incident_id: str, reason: str) -> int:
        """Queue a reap job. It carries no program: the runner takes the stack's own."""
        run_id = uuid.uuid4().hex[:12]
        event = Event(
            id=f"reap-{run_id}",
            source="responder",
            type=REAP_EVENT,
            resource_type="stack",
            incident=Incident(id=incident_id) if incident_id else None,
            data={"reason": reason},
        )
        body = json.dumps({"project": project, "stack": stack, "reason": reason}).encode()
        deps = Deps(self.store, [], self.max_attempts, self.clock, self.notify)
        # The reason is shown on the job; the playbook reads it from the event.
        run = Run([reap_stack], {"reason": reason}, stack=(project, stack))
        [enqueued] = await enqueue(deps, body, [Arrival(event.id, event)], run=run)
        log.warning(
            "stack.expired",
            project=project,
            stack=stack,
            incident_id=incident_id or None,
            reason=reason,
            job_id=enqueued.job_ids[0],
        )
        return enqueued.job_ids[0]


def _expired(record: StackRecord, now: float) -> str | None:
    """Why the stack should be destroyed now, if it should. Callers check that no job is pending
    for it: a `provisioning` stack without one was left behind by a job that ended or crashed."""
    if record.status == StackStatus.STUCK:
        return None
    if record.status == StackStatus.FAILED:
        return "failed: its first up did not succeed"
    if record.status == StackStatus.PROVISIONING:
        return "failed: no job is bringing it up"
    if record.max_age is not None and now - record.created_at >= record.max_age:
        return f"max_age: created {now - record.created_at:.0f}s ago (limit {record.max_age:g}s)"
    if record.idle_ttl is not None:
        last = max(record.last_activity_at, record.incident_last_event_at or 0.0)
        if now - last >= record.idle_ttl:
            return f"idle_ttl: no activity for {now - last:.0f}s (limit {record.idle_ttl:g}s)"
    return None


def _orphaned(record: StackRecord | None, now: float, orphan_age: float) -> str | None:
    if record is None:
        return "orphan: no incident in the store owns this stack"
    if record.status == StackStatus.STUCK:
        return None
    if record.status == StackStatus.DESTROYED:
        return "orphan: the store recorded this stack as destroyed"
    if record.incident_resolved_at is not None and now - record.incident_resolved_at >= orphan_age:
        return f"orphan: its incident was resolved {now - record.incident_resolved_at:.0f}s ago"
    return None
