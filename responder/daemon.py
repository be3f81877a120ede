"""The daemon's assembly: one aiohttp cleanup context per resource, each under its own typed key.

The contexts run in order on start-up (private files, store, stack operations, notes, runner,
reaper, readiness) and are undone in reverse on shutdown; a part that fails to start unwinds only those
before it. `responder.web` handles HTTP over the parts (`responder.web.daemon.DAEMON`).
"""

import contextlib
import fcntl
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from responder import metrics
from responder.config import ConfigError, Settings, database_secrets, masked_url
from responder.lifecycle import SYSTEM_PLAYBOOKS, Reaper
from responder.logs import Redactor, get_logger
from responder.notes import NotePlanner
from responder.notes.service import running_notes
from responder.playbook import Playbook
from responder.playbook_loader import PlaybookLoadError, load_playbooks
from responder.runner import Runner
from responder.secret_files import ensure_secret_file
from responder.stacks import PulumiEnvironment, PulumiOperations, StackOperations
from responder.stacks.operations import KILL_GRACE
from responder.store import Caps, Store
from responder.store.postgres import PostgresStore
from responder.store.sqlite.process import SQLiteProcessStore
from responder.web.app import http_app
from responder.web.daemon import DAEMON, SETTINGS, Credentials, Daemon

log = get_logger("responder.daemon")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

DATA_DIR = web.AppKey("data_dir", Path)
CREDENTIALS = web.AppKey("credentials", Credentials)
STORE = web.AppKey[Store]("store")
OPS = web.AppKey("stack_operations", StackOperations)
RUNNER = web.AppKey("runner", Runner)
REAPER = web.AppKey("reaper", Reaper)
NOTES = web.AppKey("notes", NotePlanner)


def create_app(
    settings: Settings,
    *,
    redactor: Redactor | None = None,
    clock: Callable[[], float] = time.time,
    playbooks: list[Playbook] | None = None,
    operations: StackOperations | None = None,
) -> web.Application:
    """The daemon's app. Playbooks load now, so a broken one stops start-up before anything listens.

    `operations` replaces the Pulumi CLI behind the stacks (tests); the app starts and closes it."""
    loaded = playbooks if playbooks is not None else load_playbooks(settings.playbooks_dir)
    refuse_reserved_names(loaded)
    app = http_app(settings)
    app.cleanup_ctx.extend(contexts(loaded, redactor or Redactor(), clock, operations))
    return app


def refuse_reserved_names(playbooks: list[Playbook]) -> None:
    """Responder's own playbooks (reaping, the orphan sweep) are found by name: none of the
    operator's may take one of their names."""
    reserved = {p.name for p in SYSTEM_PLAYBOOKS} & {p.name for p in playbooks}
    if reserved:
        raise PlaybookLoadError(
            f"playbook names reserved for responder itself: {', '.join(sorted(reserved))}"
        )


def contexts(
    playbooks: list[Playbook],
    redactor: Redactor,
    clock: Callable[[], float],
    operations: StackOperations | None = None,
) -> list[CleanupContext]:
    """The daemon's cleanup contexts, in start-up order; each reads what earlier ones stored."""
    by_name = {p.name: p for p in [*playbooks, *SYSTEM_PLAYBOOKS]}

    async def private_files(app: web.Application) -> AsyncIterator[None]:
        # Everything the daemon and its workers create (the store with whole webhook bodies,
        # postmortem exports, workspaces, scratch) is for its user only: files 0600, dirs 0700.
        umask = os.umask(0o077)
        stack = contextlib.ExitStack()
        try:
            settings = app[SETTINGS]
            data_dir = settings.data_dir.resolve()
            prepare_data_dir(data_dir)
            if not settings.database_url:
                stack.enter_context(hold_data_dir(data_dir))
            credentials = credentials_for(settings, data_dir)
            redactor.add(*credentials.all())
            if not settings.verify_signatures:
                log.warning(
                    "webhook.verification_disabled",
                    message="RESPONDER_VERIFY_SIGNATURES=false: webhooks are NOT authenticated; for local development only",
                )
            app[DATA_DIR] = data_dir
            app[CREDENTIALS] = credentials
            yield
            log.info("daemon.stopped")
        finally:
            stack.close()
            os.umask(umask)

    async def store(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        opened: Store
        if settings.database_url:
            # The password must never reach a log line, whatever error might quote the URL.
            redactor.add(*database_secrets(settings.database_url))
            log.info("store.opening", kind="postgresql", url=masked_url(settings.database_url))
            if settings.lease_seconds * 2 / 3 < KILL_GRACE:
                # A lease is renewed every third of it: another node may take a dead node's job
                # over two thirds of a lease after its death, and repair the stack under a CLI
                # still cancelling.
                log.warning(
                    "store.lease_short",
                    lease_seconds=settings.lease_seconds,
                    message=f"a dead node's operation may still be cancelling (up to {KILL_GRACE:g}"
                    " s) when another node takes its job over: keep RESPONDER_LEASE_SECONDS at"
                    f" {KILL_GRACE * 1.5:g} or more",
                )
            # Every worker may hold a connection for a moment, beside the intake's and the reaper's.
            opened = PostgresStore(
                settings.database_url,
                max_connections=settings.workers + 8,
                lease=settings.lease_seconds,
            )
        else:
            db = app[DATA_DIR] / "responder.db"
            opened = SQLiteProcessStore(db, lease=settings.lease_seconds).as_store()
        await opened.open()
        app[STORE] = opened
        yield
        await opened.close()

    async def stack_operations(app: web.Application) -> AsyncIterator[None]:
        ops: StackOperations
        if operations is not None:
            ops = operations
        else:
            env = PulumiEnvironment.create(app[DATA_DIR])
            # A postgres:// state backend's password must never reach a log line either.
            redactor.add(*database_secrets(env.backend_url))
            ops = PulumiOperations(
                env,
                timeout=app[SETTINGS].job_timeout,
                redactor=redactor,
                # One per job worker: each job's next operation starts in a warm process.
                kept_workers=app[SETTINGS].workers,
                operations_per_worker=app[SETTINGS].operations_per_worker,
                stateless_programs=app[SETTINGS].stateless_programs,
                settings=app[STORE],  # stacks' config and salt, for whichever node runs them next
            )
        await ops.start()
        app[OPS] = ops
        yield
        await ops.close()

    async def notes(app: web.Application) -> AsyncIterator[None]:
        # Before the runner, which queues notes; stopped after it.
        async with running_notes(app[SETTINGS], app[STORE], redactor, clock) as planner:
            app[NOTES] = planner
            yield

    async def runner(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        started = Runner(
            app[STORE],
            app[OPS],
            by_name,
            workers=settings.workers,
            job_timeout=settings.job_timeout,
            retry_backoff=settings.retry_backoff,
            params={
                "target_url": settings.probe_url
                or f"http://{settings.host}:{settings.port}/healthz",
                "scratch_root": str(app[DATA_DIR] / "scratch"),
            },
            clock=clock,
            postmortem_dir=app[DATA_DIR] / "postmortem",
            redactor=redactor,
            notes=app[NOTES],
            caps=Caps(
                settings.max_live_stacks,
                settings.max_stacks_per_service,
                settings.max_stacks_per_playbook,
                settings.max_operations_per_minute,
            ),
        )
        await started.start()
        app[RUNNER] = started
        yield
        await started.stop(settings.shutdown_grace)

    async def reaper(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        started = Reaper(
            app[STORE],
            app[OPS],
            {p.project: p.program for p in playbooks},
            notify=app[RUNNER].notify,
            max_attempts=settings.job_max_attempts,
            approval_timeout=settings.approval_timeout,
            orphans="report" if settings.orphans == "report" else "destroy",
            orphan_age=settings.orphan_age,
            interval=settings.reaper_interval,
            orphan_interval=settings.orphan_sweep_interval,
            retention=settings.retention,
            clock=clock,
            # One record of store failures, the runner's and the reaper's, for /readyz.
            health=app[RUNNER].health,
        )
        started.start()
        app[REAPER] = started
        yield
        await started.stop()

    async def ready(app: web.Application) -> AsyncIterator[None]:
        daemon = Daemon(
            app[SETTINGS],
            app[STORE],
            app[OPS],
            app[RUNNER],
            app[REAPER],
            app[CREDENTIALS],
            playbooks,
            clock,
            ready=True,
        )
        app[DAEMON] = daemon
        metrics.daemon_started(daemon.ops.pulumi_version)
        log.info(
            "daemon.started",
            playbooks=list(by_name),
            pulumi=daemon.ops.pulumi_version,
            data_dir=str(app[DATA_DIR]),
            workers=app[SETTINGS].workers,
            node=app[STORE].node,
        )
        yield
        daemon.ready = False

    return [private_files, store, stack_operations, notes, runner, reaper, ready]


def hold_data_dir(path: Path) -> BinaryIO:
    """Hold the data dir for this daemon while it runs (a lock the system drops with the process).
    With SQLite a second daemon on it would take the first one's running jobs over as those of
    an earlier life (one process a store file), stopping their operations, and only then fail to
    bind the port: it is refused before anything is opened."""
    held = (path / "daemon.lock").open("a+b")  # 0600, as the umask says
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.close()
        raise ConfigError(
            f"another responder is running on the data dir {path}: with the SQLite store, one"
            " daemon a data dir (RESPONDER_PROCESSES and several nodes need RESPONDER_DATABASE_URL)"
        ) from None
    return held


def prepare_data_dir(path: Path) -> None:
    """Create the data dir for our user only. An existing one keeps its mode: the operator chose
    it, and changing it could break what else lives there (a shared dir's sticky bit, a group's
    access); a warning says when other users can reach into it."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "data_dir.permissions",
            path=str(path),
            mode=f"{mode:04o}",
            message="the data dir is open to other users (its mode is left as it is); "
            "chmod 700 it unless that is intended",
        )


def credentials_for(settings: Settings, data_dir: Path) -> Credentials:
    return Credentials(
        pagerduty_secrets=settings.pagerduty_secrets
        or (_generated(data_dir / "pagerduty-webhook-secret", "pagerduty webhook secret"),),
        events_v2_routing_keys=settings.events_v2_routing_keys
        or (
            _generated(
                data_dir / "events-v2-routing-key",
                "events v2 routing key",
                lambda: secrets.token_hex(16),
            ),
        ),
        alertmanager_token=settings.alertmanager_token
        or _generated(data_dir / "alertmanager-token", "alertmanager token"),
        api_token=settings.api_token or _generated(data_dir / "api-token", "api token"),
    )


def _generated(path: Path, what: str, make: Callable[[], str] | None = None) -> str:
    existed = path.exists()
    value = ensure_secret_file(path, make) if make else ensure_secret_file(path)
    log.info("secret.generated" if not existed else "secret.loaded", secret=what, path=str(path))
    return value
