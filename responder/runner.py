"""The job runner: workers claim jobs from the store, run their playbooks, and recover after a crash."""

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from responder import metrics
from responder.health import StoreHealth
from responder.idle import IdleWorkers
from responder.job_stack import JobStack, StackDeps
from responder.leases import LeaseKeeper
from responder.lifecycle import SYSTEM_PLAYBOOKS
from responder.logs import Redactor, get_logger
from responder.notes import NotePlanner
from responder.outcome import judge, log_failed, ms_since
from responder.playbook import OPERATOR_PARAMS, Context, Playbook
from responder.stacks import StackOperations, StackTarget
from responder.stacks.operations import KILL_GRACE
from responder.store import Caps, Job, JobStatus, LeaseLost, NextClaim, Store

T = TypeVar("T")

log = get_logger("responder.runner")

# Seconds a stopping worker waits for its claim under way, then for the store to take the job back.
RELEASE_WAIT = 5.0
# Seconds the jobs a stop interrupts get to end: an operation's kill grace, then its stack's repair.
REPAIR_TIME = 15.0
INTERRUPTED_WAIT = KILL_GRACE + REPAIR_TIME
# Seconds before a recovery that failed on a fault of this node is tried again, doubling up to the max.
RECOVERY_RETRY = 1.0
MAX_RECOVERY_RETRY = 60.0
# Responder's own playbooks act on stacks other playbooks made, so they run those stacks' programs.
SYSTEM_NAMES = frozenset(p.name for p in SYSTEM_PLAYBOOKS)
# Claim tokens (`new_claim_token`): this process's prefix, and its count.
_TOKEN_PREFIX = secrets.token_hex(4) + "-"
_claims = itertools.count(1)


@dataclass
class _Recovery:
    """A recovery under way here: what stopping it for a lost lease takes (`Runner._interrupt`)."""

    fence: int
    task: "asyncio.Task[None]"
    target: StackTarget | None = None  # the stack it repairs, once its program is known


class Runner:
    """A pool of workers running jobs. Jobs for one stack run one at a time in arrival order (the
    store's claim guarantees it); retryable failures wait with exponential backoff in their place in
    line; jobs interrupted by a crash are recovered at start.

    Every job this node holds is leased to it in the store and renewed while it runs. Jobs whose
    lease expired (their node died) are taken over and recovered like a crash's; a job whose lease
    this node lost, or could not renew in time, is stopped here, and the store refuses its results.
    """

    def __init__(
        self,
        store: Store,
        ops: StackOperations,
        playbooks: Mapping[str, Playbook],
        *,
        workers: int,
        job_timeout: float,
        retry_backoff: float,
        params: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        caps: Caps | None = None,
        health: StoreHealth | None = None,
        postmortem_dir: Path,
        redactor: Redactor,  # the one the stack operations register secrets with
        notes: NotePlanner | None = None,  # where playbooks' notes go; None: nowhere
    ) -> None:
        self.store = store
        self.ops = ops
        self.playbooks = playbooks
        self.workers = workers
        self.job_timeout = job_timeout
        self.retry_backoff = retry_backoff
        # The operator's parameters: a job adds only those its playbook declares.
        self.params = dict(params or {})
        self.clock = clock
        self.caps = caps or Caps()
        self.health = health or StoreHealth()
        # project -> program of the playbooks that create stacks, for system jobs on stacks the store
        # does not know (orphans).
        self.programs = {
            p.project: p.program for p in playbooks.values() if p.name not in SYSTEM_NAMES
        }
        self.postmortem_dir = postmortem_dir
        self.redactor = redactor
        self.notes = notes
        self.stack_deps = StackDeps(
            ops=ops,
            store=store,
            health=self.health,
            clock=clock,
            caps=self.caps,
            postmortem_dir=postmortem_dir,
            mask=self.mask,
            job_timeout=job_timeout,
        )
        self._handles: dict[int, JobStack] = {}
        # Jobs of this node cancelled while claimed but not yet given a handle (see `_attempt`).
        self._early_cancels: set[int] = set()
        # Jobs of this node whose result was recorded before a cancel reached their run (a stop past
        # its grace): ended, not interrupted (see `_attempt`).
        self._recorded: set[int] = set()
        self._idle = IdleWorkers()
        self._stopping = False
        self._stop_asked = asyncio.Event()  # set with `_stopping`, for waits to end at once
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[int, asyncio.Task[None]] = {}
        self._recoveries: dict[int, _Recovery] = {}  # by job id
        # job id -> the job the store claimed for its worker with that job's result (`_attempt`).
        self._handoff: dict[int, Job] = {}
        self.leases = LeaseKeeper(
            store,
            self.health,
            clock,
            interrupt=self._interrupt,
            recover=self._recover_one,
            each_round=self._cancel_requested,
        )

    def __repr__(self) -> str:
        return f"<Runner workers={self.workers} running={len(self._running)}>"

    async def start(self) -> None:
        self.leases.start()  # first: the jobs taken over below are renewed while they recover
        await self.recover()
        await self.store.listen(self.notify)  # other nodes' new work wakes ours at once
        self._loops = [
            asyncio.create_task(self._loop(i), name=f"runner-{i}") for i in range(self.workers)
        ]

    async def cancel(self, job_id: int) -> Job | None:
        """Cancel a job: a waiting one at once, a running one cleanly (its playbook is stopped where it
        is; an operation it runs is cancelled through the CLI and the stack repaired)."""
        now = self.clock()
        job = await self.store.request_cancel(job_id, now)
        metrics.job_ended_by(job, now)  # a waiting job; a running one is counted as it ends
        if job is not None and job.status == JobStatus.CANCELLED:
            self._idle.announce()  # a waiting retry held its stack: the next job there may run
        handle = self._handles.get(job_id)
        if job is not None and job.status == JobStatus.RUNNING:
            if handle is not None:
                handle.cancel()
            elif job.node == self.store.node:  # claimed here, its handle not made yet
                self._early_cancels.add(job_id)
        return await self.store.get_job(job_id) if job is not None else None

    async def run_once(self) -> int | None:
        """One worker's turn, on demand (tests, tools): claim the next due job and run it to its end.
        Returns its id, or None when no job is due."""
        job = await self.health.call("run_once", lambda: self.store.claim_next(self.clock()))
        if job is None:
            return None
        await self._run(job)
        return job.id

    def notify(self) -> None:
        """New jobs were stored: wake an idle worker."""
        self._idle.announce()

    async def stop(self, grace: float) -> None:
        """Stop claiming; give running jobs `grace` seconds, then interrupt them.

        Queued jobs stay queued, and interrupted ones stay `running`: the next start recovers both.
        A job claimed meanwhile is handed back unstarted (`_claim`).
        A job still waiting for the store to record its result is interrupted the same way.
        """
        self._stopping = True
        self._stop_asked.set()
        self._idle.announce(everyone=True)
        running = [*self._running.values(), *self.leases.recoveries]
        if running:
            log.info("runner.draining", running=len(running), grace_seconds=grace)
            _, pending = await asyncio.wait(running, timeout=grace)
            if pending:
                await self._interrupt_all(pending)
        for loop in self._loops:
            loop.cancel()
        if self._loops:  # each ends once its job has, or hands back a claim (RELEASE_WAIT)
            await asyncio.wait(self._loops, timeout=2 * RELEASE_WAIT)
        await self.leases.stop()  # last: leases are kept while their jobs drain

    async def _interrupt_all(self, tasks: "set[asyncio.Task[None]]") -> None:
        """Interrupt the jobs and recoveries still under way at a stop's end. One still not ended
        after INTERRUPTED_WAIT waits for a store that does not take its records: it is cancelled
        again until it ends (each record it waits for through `job_stack._uninterrupted` takes one
        more cancel) and left running in the store, for the next start to recover: a stop must end.
        The records themselves are left to retry until the daemon's last moment."""
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=INTERRUPTED_WAIT)
        if not stuck:
            return
        jobs = {task: job_id for job_id, task in self._running.items()}
        jobs |= {r.task: job_id for job_id, r in self._recoveries.items()}
        log.error(
            "runner.stop_gave_up",
            job_ids=sorted(jobs[task] for task in stuck if task in jobs),
            waited_seconds=INTERRUPTED_WAIT,
            reason="not ended after their interrupt: the store not taking their records, or a repair",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT
        while stuck and loop.time() < deadline:
            for task in stuck:
                task.cancel()
            _, stuck = await asyncio.wait(stuck, timeout=0.1)

    async def recover(self) -> None:
        """Take over the jobs whose node is gone (at start: a crash of this daemon), repair their
        stacks, then retry them or mark them failed."""
        taken = await self.health.call("recovery", lambda: self.store.take_over(self.clock()))
        for job in taken:
            self.leases.hold(job)
        for job in taken:
            # Each in a task of its own, which a lost lease stops (`_interrupt`), not the start; the
            # start waits for its first try only, not for the tries after a fault (`_recover_one`).
            tried = asyncio.Event()
            recovery = asyncio.create_task(self._recover_one(job, tried), name=f"recover-{job.id}")
            self.leases.track(recovery)  # a stop waits for it as for a take-over's
            first = asyncio.create_task(tried.wait())
            try:
                await asyncio.wait([recovery, first], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                recovery.cancel()  # a cancel of the start cancels it too
                raise
            finally:
                first.cancel()

    async def _recover_one(self, job: Job, tried: asyncio.Event | None = None) -> None:
        """Recover one job taken over, in a task of its own (see `_interrupt`). A fault of this
        node (a full disk, a failed fork) is logged and the recovery tried again, the job and its
        stack held meanwhile: given up, the job would stay `running` and its stack blocked, since
        on SQLite nothing else takes a job over but the next start. `tried` is set once the first
        try has ended."""
        task = asyncio.current_task()
        assert task is not None
        structlog.contextvars.bind_contextvars(**_job_context(job))
        if self.leases.fences.get(job.id) != job.fence:  # lost before this task began
            log.warning("job.lease_lost", phase="recovery")
            return
        recovery = self._recoveries[job.id] = _Recovery(job.fence, task)
        delay = RECOVERY_RETRY
        try:
            while True:
                try:
                    await self._recover(job, recovery)
                    return
                except LeaseLost:
                    log.warning("job.lease_lost", phase="recovery")
                    return
                except Exception:
                    log.exception("job.recovery_failed", retry_in_seconds=delay)
                if tried is not None:
                    tried.set()
                with contextlib.suppress(TimeoutError):  # the wait, unless the runner stops
                    await asyncio.wait_for(self._stop_asked.wait(), delay)
                if self._stopping:
                    return  # still running: the next start recovers it
                delay = min(delay * 2, MAX_RECOVERY_RETRY)
        finally:
            if tried is not None:
                tried.set()
            if self._recoveries.get(job.id) is recovery:
                del self._recoveries[job.id]
            self._early_cancels.discard(job.id)  # a retry reads the request from its claimed row
            self.leases.release(job.id)
            structlog.contextvars.clear_contextvars()
            self._idle.announce()  # its retry is queued, or its stack free for the next job

    async def _recover(self, job: Job, recovery: _Recovery) -> None:
        log.warning("job.recovering", attempts=job.attempts, previous_node=job.node)
        playbook = self.playbooks.get(job.playbook)
        # A playbook gone since (renamed, removed before a restart) still leaves its stack locked
        # and its processes alive: the stack is repaired by its own program, then the job fails.
        program = await self._program(job, playbook)
        if program is not None:
            recovery.target = StackTarget(job.stack, job.project, program)
            await self.ops.recover(recovery.target)
        error = "interrupted: the node running this job stopped"
        now, fence = self.clock(), job.fence
        if playbook is not None and program is not None and job.attempts < job.max_attempts:
            await self._write(job, lambda: self.store.retry_later(job.id, now, error, fence=fence))
            log.info("job.retrying", reason=error)
        else:
            await self._write(
                job,
                lambda: self.store.finish(job.id, JobStatus.FAILED, now, error=error, fence=fence),
            )
            log.error("job.failed", error=error)
            metrics.job_attempt_ended(job.playbook, JobStatus.FAILED, None, final=True)

    async def _cancel_requested(self) -> None:
        """Cancel requests made through another node reach this one's running jobs."""
        if not self._handles and not self._early_cancels:
            return
        marked = set(self._early_cancels)  # a mark made during the read is not judged by it
        requested = await self.store.cancels_requested()
        for job_id in requested:
            handle = self._handles.get(job_id)
            if handle is not None and not handle.cancelled:
                log.info("job.cancel_requested", job_id=job_id)
                handle.cancel()
        # A mark is left by a cancel asked here, so its job is among those while it runs here; the
        # others' attempts ended (or were cancelled before they began).
        self._early_cancels -= marked - requested

    async def _interrupt(self, job_id: int, fence: int, reason: str) -> None:
        """Stop a job here at once, recording nothing: its operation's processes are killed and its
        stack left as it is, for the node that holds the job next to repair and recover. So is a
        recovery: left to go on, it would repair the stack under the next holder's operation."""
        acting = self._acting_for(job_id, fence)
        if acting is None:
            if self.leases.fences.get(job_id) == fence:  # held, not begun (a recovery in line)
                self.leases.release(job_id)
            return  # otherwise ended meanwhile, or this is a later run of the job
        task, target = acting
        log.warning("job.interrupted_here", job_id=job_id, reason=reason)
        if target is not None:
            await self.ops.abandon(target)
        task.cancel()

    def _acting_for(
        self, job_id: int, fence: int
    ) -> "tuple[asyncio.Task[None], StackTarget | None] | None":
        """The task acting here for the job under `fence`, and the stack it acts on if known yet:
        its recovery, or its run (whose stack is not known while a system job's program is looked
        up in the store, which may not answer)."""
        recovery = self._recoveries.get(job_id)
        if recovery is not None:
            if recovery.fence != fence or recovery.task.done():
                return None
            return recovery.task, recovery.target
        task, handle = self._running.get(job_id), self._handles.get(job_id)
        if task is None or task.done() or self.leases.fences.get(job_id) != fence:
            return None
        if handle is None:
            return task, None
        return (task, handle.target) if handle.job.fence == fence else None

    async def _loop(self, index: int) -> None:
        """One worker: claim, run, repeat. Nothing but cancellation ends it: a store outage is
        waited out (and reported in readiness), anything unexpected is logged and the loop goes on."""
        caller = f"worker {index}"
        while not self._stopping:
            try:
                await self._next(caller)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runner.loop_error", worker=index)
                self._idle.announce()  # it may have been woken for work: another worker looks
                await asyncio.sleep(self.health.max_delay)  # not a hot loop if the fault persists

    async def _next(self, caller: str) -> None:
        # Taken before the claim: work announced while the claim or `next_due` is under way sends
        # this worker to look again instead of waiting. (One shared event, cleared by each worker
        # before its claim, let a worker wake to claim one job and clear the wake-up another still
        # needed for the next: that job waited for the 5 s idle poll.)
        mark = self._idle.mark()
        job = await self._claim(caller)
        if job is None:
            if not self._stopping:
                await self._wait_for_work(caller, mark)
            return
        while job is not None:
            job = await self._run_claimed(job)

    async def _run_claimed(self, job: Job) -> Job | None:
        """Run a job this worker claimed; the next one, if the store claimed it with the result."""
        self._idle.announce()  # more may be due: the next idle worker looks too
        task = asyncio.create_task(self._run(job, claim_next=True))
        self._running[job.id] = task
        try:
            await asyncio.shield(task)  # a stop() cancels the loop, not the job
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.wait([task])
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                if (after := self._handoff.pop(job.id, None)) is not None:
                    await self._release(after)  # claimed as the stop cancelled this worker
                raise
            # Only the job was interrupted (its lease is gone, see `_interrupt`): the worker goes on.
        finally:
            self._running.pop(job.id, None)
            self._idle.announce()  # the stack is free: its next job may now run
        after = self._handoff.pop(job.id, None)
        if after is not None and self._stopping:
            await self._release(after)  # as `_claim` does with a claim made while stopping
            return None
        return after

    async def _claim(self, caller: str) -> Job | None:
        """The next job for this worker, or None. A job claimed as the runner stops is handed back
        to the queue: run now, it would outlast the stop's grace; left running, the next start would
        repair its stack as an interrupted job's. So is one whose claim the stop cancelled, since
        that write may still commit: it is waited for, briefly."""
        token = new_claim_token()  # a retry of this claim gets the job it may already have taken
        claim = asyncio.ensure_future(
            self.health.call(caller, lambda: self.store.claim_next(self.clock(), token))
        )
        job = await self._seen_through(claim)
        if job is not None and self._stopping:
            await self._release(job)
            return None
        return job

    async def _seen_through(
        self, claim: "asyncio.Future[Job | None]", call: str = "claim"
    ) -> Job | None:
        """What a store call that may claim a job claimed. Cancelled meanwhile, the call (whose write
        may still commit) is waited for, briefly, and the job it claimed handed back; then the
        cancel goes on."""
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            try:
                await asyncio.wait([claim], timeout=RELEASE_WAIT)
            finally:
                claim.cancel()  # no answer: the next start recovers whatever it took
            if claim.done() and not claim.cancelled():
                if (error := claim.exception()) is not None:
                    log.warning(f"job.{call}_failed", error=str(error), reason="cancelled")
                elif (taken := claim.result()) is not None:
                    await self._release(taken)
            raise

    async def _release(self, job: Job) -> None:
        """Hand the job back to the queue, within RELEASE_WAIT even through the stop's cancel."""
        release = asyncio.ensure_future(self.store.release(job.id, job.fence, self.clock()))
        waited = asyncio.ensure_future(asyncio.wait([release], timeout=RELEASE_WAIT))
        cancelled = False
        while not waited.done():
            try:
                await asyncio.shield(waited)
            except asyncio.CancelledError:  # the stop's: the release is still seen through
                cancelled = True
        if not release.done():
            release.cancel()
        # In its own job's context: the worker may still have another job's bound.
        with structlog.contextvars.bound_contextvars(**_job_context(job)):
            if not release.done() or release.cancelled():
                log.warning("job.release_failed", error="the store did not answer")
            elif release.exception() is not None:
                log.warning("job.release_failed", error=str(release.exception()))
            elif (status := release.result()) == JobStatus.CANCELLED:  # asked while claimed
                log.warning("job.cancelled", reason="cancelled before it started")
                metrics.jobs_ended([(job.playbook, status.value)])
            else:
                log.info("job.released", reason="the runner is stopping")
        if cancelled:
            raise asyncio.CancelledError

    async def _wait_for_work(self, caller: str, mark: int) -> None:
        due = await self.health.call(caller, self.store.next_due)
        timeout = max(0.05, due - self.clock()) if due else 5.0
        await self._idle.wait(mark, min(timeout, 5.0))

    async def _write(self, job: Job, fn: Callable[[], Awaitable[T]]) -> T:
        """A store call for this job, retried until the store takes it: a result is never dropped."""
        return await self.health.call(f"job {job.id}", fn)

    async def _program(self, job: Job, playbook: Playbook | None) -> str | None:
        """The program a job's stack runs. Never chosen by the job: its playbook's own, except for
        responder's system playbooks, which act on stacks other playbooks made, and for a playbook
        no longer loaded (a job recovered): then the stack's, or its project's."""
        if playbook is not None and playbook.name not in SYSTEM_NAMES:
            return playbook.program
        record = await self._write(job, lambda: self.store.get_stack(job.project, job.stack))
        return record.program if record is not None else self.programs.get(job.project)

    def _params(self, job: Job, playbook: Playbook) -> dict[str, str]:
        """The operator's parameters, overlaid with the job's only where its playbook declares them."""
        allowed = set(playbook.params) - OPERATOR_PARAMS
        return {**self.params, **{k: v for k, v in job.params.items() if k in allowed}}

    async def _run(self, job: Job, *, claim_next: bool = False) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**_job_context(job))
        started = time.monotonic()
        log.info(
            "job.started", attempt=job.attempts, max_attempts=job.max_attempts, fence=job.fence
        )
        self.leases.hold(job)
        try:
            await self._attempt(job, started, claim_next=claim_next)
        except asyncio.CancelledError:
            if job.id not in self._recorded:
                log.warning("job.interrupted", duration_ms=ms_since(started))
            raise
        except LeaseLost:  # another node holds the job now: its result is that node's to write
            log.warning("job.lease_lost", duration_ms=ms_since(started))
        except Exception as e:  # a fault of the runner or the store, not of the playbook
            log.exception("job.crashed")
            await self._fail(job, f"internal error: {e!r}", started, error_kind="internal_error")
        finally:
            self._handles.pop(job.id, None)
            self._early_cancels.discard(job.id)
            self._recorded.discard(job.id)
            self.leases.release(job.id)
            structlog.contextvars.clear_contextvars()

    async def _attempt(self, job: Job, started: float, *, claim_next: bool = False) -> None:
        playbook = self.playbooks.get(job.playbook)
        if playbook is None:
            await self._fail(job, f"playbook {job.playbook!r} is not loaded", started)
            return
        program = await self._program(job, playbook)
        if program is None:
            await self._fail(job, f"no playbook deploys project {job.project!r}", started)
            return
        deadline = asyncio.get_running_loop().time() + self.job_timeout
        handle = JobStack(self.stack_deps, job, playbook, program, deadline=deadline)
        self._handles[job.id] = handle
        # A cancel asked before this attempt (during an earlier one, or its recovery) is in the
        # claimed row; one that reached this node since the claim found no handle and left a mark.
        # Another node's cancel arrives with the leases' next round (`_cancel_requested`).
        if job.cancel_requested or job.id in self._early_cancels:
            handle.cancel()
        event = job.event
        ctx = Context(
            event=event,
            incident=event.incident,
            log=get_logger(f"playbooks.{playbook.name}"),
            stack=handle,
            playbook=playbook.name,
            job_id=job.id,
            params=self._params(job, playbook),
        )
        failure: Exception | None = None
        try:
            async with handle.stopping(), self.ops.locked(handle.target):
                await playbook(ctx)
                await handle.flush()
        except LeaseLost:
            raise
        except Exception as e:  # judged below, together with a cancel that may have caused it
            failure = e
        outcome = judge(
            failure,
            cancelled=handle.cancelled,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            retry_backoff=self.retry_backoff,
            started=started,
        )
        if outcome.status == JobStatus.AWAITING_APPROVAL:
            plan, now = outcome.plan or {}, self.clock()
            await self._write(
                job, lambda: self.store.await_approval(job.id, plan, now, fence=job.fence)
            )
            metrics.job_attempt_ended(job.playbook, outcome.status, started, final=False)
            return
        await handle.abandon()
        error = self.mask(outcome.error)
        if outcome.status == JobStatus.QUEUED:
            retry_at = self.clock() + outcome.retry_in
            await self._write(
                job, lambda: self.store.retry_later(job.id, retry_at, error, fence=job.fence)
            )
            metrics.job_attempt_ended(job.playbook, "retrying", started, final=False)
            self._idle.announce()
            return
        outputs = handle.last_outputs if outcome.status == JobStatus.SUCCEEDED else None
        now = self.clock()
        # The playbook's notes are queued with the result (a retried attempt's are dropped: the
        # next attempt writes its own).
        notes = self.notes.plan(job, outcome.status, ctx.notes) if self.notes else []
        # A worker's result also claims its next job (one store call a job, not two), unless the
        # runner is stopping. Its token makes a retry after a lost answer get that job back, and a
        # cancel meanwhile (a stop past its grace, a lost lease) hands it back.
        token = new_claim_token() if claim_next and not self._stopping else None
        write = self._write(
            job,
            lambda: self.store.finish(
                job.id,
                outcome.status,
                now,
                error=error or None,
                outputs=outputs,
                fence=job.fence,
                notes=notes,
                then_claim=NextClaim(token, self.clock()) if token else None,
            ),
        )
        if token is None:  # nothing to hand back if cancelled
            after = await write
        else:
            result = asyncio.ensure_future(write)
            try:
                after = await self._seen_through(result, call="result")
            except asyncio.CancelledError:
                if result.done() and not result.cancelled() and result.exception() is None:
                    # Recorded before the cancel took effect (the job claimed with it was handed
                    # back): it ended as recorded, and is logged and counted so, not interrupted.
                    self._recorded.add(job.id)
                    self._ended(job, outcome.status, started, notes=bool(notes))
                raise
        if after is not None:
            self._handoff[job.id] = after
        self._ended(job, outcome.status, started, notes=bool(notes))

    def _ended(self, job: Job, status: JobStatus, started: float, *, notes: bool) -> None:
        """A job's final result is recorded: its notes may be sent, it is counted and logged."""
        if notes and self.notes:
            self.notes.queued()
        metrics.job_attempt_ended(job.playbook, status, started, final=True)
        if status == JobStatus.SUCCEEDED:
            log.info("job.succeeded", duration_ms=ms_since(started))

    async def _fail(self, job: Job, error: str, started: float, error_kind: str = "") -> None:
        error = self.mask(error)
        log_failed(error, started, error_kind)
        now = self.clock()
        await self._write(
            job,
            lambda: self.store.finish(job.id, JobStatus.FAILED, now, error=error, fence=job.fence),
        )
        metrics.job_attempt_ended(job.playbook, JobStatus.FAILED, started, final=True)

    def mask(self, text: str) -> str:
        """Error text bound for the store and the API: an exception may quote a registered secret,
        and the log's redactor only guards the log."""
        return str(self.redactor.redact(text))


def new_claim_token() -> str:
    """A token no other claim of this node carries: a count, after a random prefix of this process
    (a node is one process start, see `new_node_id`). Not a secret, so not a read of the system's
    randomness a claim (that was ≈ 1 % of the daemon's time draining no-op jobs, by py-spy)."""
    return f"{_TOKEN_PREFIX}{next(_claims)}"


def _job_context(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "delivery_id": job.delivery_id,
        "event_id": job.event.id,
        "event_type": job.event_type,
        "incident_id": job.incident_id,
        "playbook": job.playbook,
        "stack": job.stack,
    }
