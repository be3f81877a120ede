"""How a job attempt ends: the approval gate, and the status, error and retry judged from its end."""

import time
from dataclasses import dataclass
from typing import Any

from responder.logs import get_logger
from responder.stacks import OperationCancelled, StackError, WorkerCrashed
from responder.store import CANCELLED_BY_REQUEST, Job, JobStatus

log = get_logger("responder.runner")


class Refused(Exception):
    """A blast-radius cap forbids this job's operation."""

    def __init__(self, cap: str) -> None:
        super().__init__(f"refused: {cap} reached")
        self.cap = cap


class AwaitingApproval(Exception):
    """The job's plan needs approval; the job leaves the worker and waits in the store."""

    def __init__(self, plan: dict[str, Any]) -> None:
        super().__init__("waiting for approval")
        self.plan = plan


@dataclass(frozen=True)
class Outcome:
    """What becomes of a job after an attempt. `retry_in` (seconds) applies to a QUEUED one;
    `plan` to one AWAITING_APPROVAL."""

    status: JobStatus
    error: str = ""
    retry_in: float = 0.0
    plan: dict[str, Any] | None = None


def judge(
    failure: Exception | None,
    *,
    cancelled: bool,
    attempts: int,
    max_attempts: int,
    retry_backoff: float,
    started: float,
) -> Outcome:
    """The attempt's outcome, logged unless it succeeded, from the exception that ended the playbook.
    `started` is the attempt's `time.monotonic()` start, for the logged duration."""
    if cancelled:
        # Whatever the playbook made of it (it may have caught the error and returned): the job was
        # cancelled, and does not end as anything else.
        step = failure.step if isinstance(failure, StackError) else None
        log.warning("job.cancelled", step=step or None, duration_ms=ms_since(started))
        return Outcome(JobStatus.CANCELLED, CANCELLED_BY_REQUEST)
    if isinstance(failure, OperationCancelled):
        # Nobody asked: its worker was signalled from outside, as a service manager stopping the
        # daemon's whole process group does (systemd's default). A fault of the node, not a cancel:
        # the operation's stack was repaired, and the job is tried again.
        failure = WorkerCrashed(
            f"the operation's worker was stopped from outside responder ({failure.message})",
            stack=failure.stack,
            step=failure.step,
        )
    if isinstance(failure, AwaitingApproval):
        log.warning("job.awaiting_approval", plan=failure.plan, duration_ms=ms_since(started))
        return Outcome(JobStatus.AWAITING_APPROVAL, plan=failure.plan)
    if isinstance(failure, Refused):
        log.warning("job.refused", cap=failure.cap, duration_ms=ms_since(started))
        return Outcome(JobStatus.REFUSED, str(failure))
    if isinstance(failure, StackError):
        if failure.retryable and attempts < max_attempts:
            delay = retry_backoff * 2 ** (attempts - 1)
            log.warning(
                "job.retrying", error=str(failure), error_kind=failure.kind, delay_seconds=delay
            )
            return Outcome(JobStatus.QUEUED, str(failure), retry_in=delay)
        log_failed(str(failure), started, failure.kind)
        return Outcome(JobStatus.FAILED, str(failure))
    if failure is not None:
        log.error("job.playbook_error", exc_info=failure)
        error = f"{type(failure).__name__}: {failure}"
        log_failed(error, started, "playbook_error")
        return Outcome(JobStatus.FAILED, error)
    return Outcome(JobStatus.SUCCEEDED)  # logged once the store has it


def require_approval(job: Job, plan: dict[str, Any], changes: dict[str, int]) -> None:
    """Go on only if exactly this plan was approved; otherwise (re)submit it for approval."""
    approved = job.approved_plan
    if (
        approved is not None
        and approved.get("operation") == plan["operation"]
        and approved.get("steps") == plan["steps"]
    ):
        log.info("job.approved_plan_applies", operation=plan["operation"])
        return
    if approved is not None:
        log.warning(
            "job.plan_changed",
            operation=plan["operation"],
            reason="the stack changed since approval",
        )
    raise AwaitingApproval({**plan, "changes": changes})


def log_failed(error: str, started: float, error_kind: str) -> None:
    log.error(
        "job.failed", error=error, error_kind=error_kind or None, duration_ms=ms_since(started)
    )


def ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
