"""The daemon's Prometheus metrics: each defined once here, with the one function that records it.

Code where things happen calls these functions; nothing else touches a metric. With several
processes (`responder.supervisor`), prometheus-client's multiprocess mode keeps each process's
values in a directory the supervisor creates (`PROMETHEUS_MULTIPROC_DIR`, read when
prometheus-client is imported) and any process's scrape adds them up (`responder.web.metrics`).
Gauges read from the job store are not here: they are read when scraped, once for all processes.
"""

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.multiprocess import mark_process_dead

from responder import __version__
from responder.store import Job

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it

# Seconds: an intake is milliseconds (a commit), a step or a job seconds to many minutes.
INTAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WORK_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

DELIVERIES = Counter(
    "responder_deliveries",
    "Deliveries by source and outcome (accepted, ignored, ping, deduplicated, duplicate, "
    "rejected); a rejected one by reason. One per event: an Alertmanager notification counts "
    "each alert.",
    ["source", "outcome", "reason"],
)
INTAKE_SECONDS = Histogram(
    "responder_intake_duration_seconds",
    "From a webhook request's handler starting to its answer being ready, for deliveries stored "
    "or recognised as redeliveries (the store commit included).",
    ["source"],
    buckets=INTAKE_BUCKETS,
)
JOBS_FINISHED = Counter(
    "responder_jobs_finished",
    "Jobs ended, by playbook and final status: by the runner, or by the store while they waited "
    "(coalesced, cancelled, rejected).",
    ["playbook", "status"],
)
JOB_SECONDS = Histogram(
    "responder_job_duration_seconds",
    "One attempt of a job on a worker, by playbook and how it ended (a final status, retrying "
    "or awaiting_approval).",
    ["playbook", "outcome"],
    buckets=WORK_BUCKETS,
)
STEP_SECONDS = Histogram(
    "responder_step_duration_seconds",
    "A job's recorded step, by kind (set_config, up, refresh, preview, destroy, export, ...) and "
    "outcome (succeeded, failed).",
    ["step", "outcome"],
    buckets=WORK_BUCKETS,
)
PULUMI_SECONDS = Histogram(
    "responder_pulumi_operation_duration_seconds",
    "One Pulumi operation in its worker process, by operation and outcome (succeeded, failed).",
    ["operation", "outcome"],
    buckets=WORK_BUCKETS,
)
PULUMI_FAILURES = Counter(
    "responder_pulumi_operation_failures",
    "Failed Pulumi operations by operation and kind (stack_locked, program_error, cli_error, "
    "timeout, cancelled, ..., interrupted when the daemon stopped it).",
    ["operation", "kind"],
)
NOTES = Counter(
    "responder_notes",
    "Note delivery attempts to the incident (pagerduty) and to chat (slack), by how each ended: "
    "sent, retrying (a 429, 5xx or timeout), failed (refused, or given up).",
    ["destination", "outcome"],
)
STORE_ERRORS = Counter(
    "responder_store_errors",
    "Job store calls that failed (unreachable, locked, full), by where: http (a request's), "
    "background (the runner, the reaper, lease renewals; each retry counts), metrics (a scrape's).",
    ["where"],
)
# Per process (a `pid` label with several): a restarted child shows as a new start time.
START_TIME = Gauge(
    "responder_process_start_time_seconds",
    "When this responder process started, in seconds since the epoch.",
    multiprocess_mode="liveall",
)
BUILD_INFO = Gauge(
    "responder_build_info",
    "Always 1: the responder version and the pulumi CLI version it runs.",
    ["version", "pulumi_version"],
    multiprocess_mode="livemax",
)

_STARTED = time.time()  # this module is imported as the daemon starts


def delivery_stored(source: str, outcomes: list[str], started: float) -> None:
    """A webhook request's events were stored (or recognised as redeliveries); `started` is the
    handler's `time.perf_counter()` at its start."""
    for outcome in outcomes:
        DELIVERIES.labels(source, outcome, "").inc()
    INTAKE_SECONDS.labels(source).observe(time.perf_counter() - started)


def delivery_rejected(source: str, reason: str) -> None:
    DELIVERIES.labels(source, "rejected", reason).inc()


def job_attempt_ended(playbook: str, outcome: str, started: float | None, *, final: bool) -> None:
    """A job's attempt ended (`started`: its `time.monotonic()` start, None for a job recovered
    after a crash, whose attempt was not timed here); a `final` outcome counts the job."""
    if started is not None:
        JOB_SECONDS.labels(playbook, outcome).observe(time.monotonic() - started)
    if final:
        JOBS_FINISHED.labels(playbook, outcome).inc()


def jobs_ended(ended: Iterable[tuple[str, str]]) -> None:
    """Jobs the store ended without running them, as (playbook, final status): coalesced or
    cancelled by a delivery, cancelled or rejected while waiting."""
    for playbook, status in ended:
        JOBS_FINISHED.labels(playbook, status).inc()


def job_ended_by(job: Job | None, now: float) -> None:
    """Count `job` if the store call made at `now` (a cancel, a decision) ended it: its
    `finished_at` is that `now`. Repeated, the call returns the job as it was, and counts nothing."""
    if job is not None and job.status.final and job.finished_at == now:
        jobs_ended([(job.playbook, job.status.value)])


def step_recorded(step: str, outcome: str, seconds: float) -> None:
    STEP_SECONDS.labels(step, outcome).observe(seconds)


def pulumi_operation(operation: str, started: float, failure: str | None) -> None:
    """A Pulumi operation ended (`started`: its `time.monotonic()` start); `failure` is the kind
    of error, None when it succeeded."""
    outcome = "succeeded" if failure is None else "failed"
    PULUMI_SECONDS.labels(operation, outcome).observe(time.monotonic() - started)
    if failure is not None:
        PULUMI_FAILURES.labels(operation, failure).inc()


def note_attempt(destination: str, outcome: str) -> None:
    NOTES.labels(destination, outcome).inc()


def store_error(where: str) -> None:
    STORE_ERRORS.labels(where).inc()


def daemon_started(pulumi_version: str) -> None:
    START_TIME.set(_STARTED)
    if multiprocess_dir() is None:  # there a process's values are its own files, and the
        # client warns that it cannot clear them, on the shared output of every child's start
        BUILD_INFO.clear()  # one build per process (a test may start several daemons in one)
    BUILD_INFO.labels(__version__, pulumi_version).set(1)


def multiprocess_dir() -> str | None:
    """The directory this process's metrics are kept in with several processes, else None."""
    return os.environ.get(MULTIPROCESS_VARIABLE) or None


@contextlib.contextmanager
def shared_metrics_dir(data_dir: Path) -> Iterator[str]:
    """For a supervisor: a fresh directory for its children's metrics, `<data dir>/metrics/<its
    pid>` (their values survive their restarts, so counters never go back), removed when it ends.
    One left by a supervisor that was killed is removed at the next start."""
    root = data_dir / "metrics"
    root.mkdir(mode=0o700, exist_ok=True)
    for stale in root.iterdir():
        if stale.name.isdigit() and not _alive(int(stale.name)):
            shutil.rmtree(stale, ignore_errors=True)
    path = root / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        pass
    return True


def process_ended(path: str, pid: int) -> None:
    """For a supervisor: a child ended. Its counters and histograms stay in the sum; its
    per-process gauges (start time, build info) go."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # the library is untyped here
