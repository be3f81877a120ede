"""Stack lifecycle enforcement: idle TTLs, maximum ages, approval timeouts and the orphan sweep.

Deadlines live in the store, not in timers: each pass (`run_once`) reads them afresh, so a restart
loses nothing. Expired stacks are destroyed by `reap_stack` jobs that queue like any other job.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Literal

from responder.events import Event, Incident, event_to_dict
from responder.logs import get_logger
from responder.playbook import Context, Playbook, on
from responder.stacks import StackError, StackNotFoundError, StackOperations
from responder.store import NewDelivery, NewJob, StackRecord, Store

log = get_logger("responder.lifecycle")

REAP_EVENT = "responder.reap"


@on(REAP_EVENT, allow_destroy=True)
async def reap_stack(ctx: Context) -> None:
    """Destroy and remove a burner stack whose time is up (idle, too old, or orphaned)."""
    ctx.log.warning("stack.reaping", reason=ctx.params.get("reason"))
    try:
        await ctx.stack.destroy(remove=True)
    except StackNotFoundError:
        ctx.log.info("stack.already_gone")


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
        clock: Callable[[], float] = time.time,
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
        self.clock = clock
        self._last_sweep = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._last_sweep = time.monotonic()  # the first sweep comes one interval after start
        self._task = asyncio.create_task(self._loop(), name="reaper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once(
                    sweep=time.monotonic() - self._last_sweep >= self.orphan_interval
                )
            except Exception:
                log.exception("reaper.pass_failed")
            await asyncio.sleep(self.interval)

    async def run_once(self, *, sweep: bool = False) -> list[int]:
        """One pass; returns the ids of the reap jobs it queued."""
        now = self.clock()
        for job_id in await self.store.expired_approvals(now - self.approval_timeout):
            await self.store.decide(
                job_id, False, now, f"approval timed out after {self.approval_timeout:g}s"
            )
            log.warning("job.rejected", job_id=job_id, reason="approval timed out")
        queued: list[int] = []
        for record in await self.store.list_stacks():
            reason = _expired(record, now)
            if reason and not await self.store.pending_jobs_for(record.project, record.stack):
                queued.append(
                    await self._reap(
                        record.project, record.stack, record.program, record.incident_id, reason
                    )
                )
        if sweep:
            self._last_sweep = time.monotonic()
            queued += await self._sweep(now)
        if queued:
            self.notify()
        return queued

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
                incident_id = record.incident_id if record else ""
                queued.append(await self._reap(project, name, program, incident_id, reason))
        return queued

    async def _reap(
        self, project: str, stack: str, program: str, incident_id: str, reason: str
    ) -> int:
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
        delivery = NewDelivery.of(event, id=event.id, body=body, received_at=self.clock())
        job = NewJob(
            playbook=reap_stack.name,
            project=project,
            stack=stack,
            event=event_to_dict(event),
            max_attempts=self.max_attempts,
            params={"program": program, "reason": reason},
        )
        recorded = await self.store.record_delivery(delivery, [job])
        log.warning(
            "stack.expired",
            project=project,
            stack=stack,
            incident_id=incident_id or None,
            reason=reason,
            job_id=recorded.job_ids[0],
        )
        return recorded.job_ids[0]


def _expired(record: StackRecord, now: float) -> str | None:
    if record.status == "provisioning":
        return None
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
    if record.status == "destroyed":
        return "orphan: the store recorded this stack as destroyed"
    if record.incident_resolved_at is not None and now - record.incident_resolved_at >= orphan_age:
        return f"orphan: its incident was resolved {now - record.incident_resolved_at:.0f}s ago"
    return None
