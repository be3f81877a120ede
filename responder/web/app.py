"""The application factory: settings in, a ready aiohttp app out (no module-level state)."""

import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog
from aiohttp import web

from responder.config import Settings
from responder.lifecycle import SYSTEM_PLAYBOOKS, Reaper
from responder.logs import Redactor, get_logger
from responder.playbook import Playbook
from responder.playbook_loader import PlaybookLoadError, load_playbooks
from responder.runner import Runner
from responder.secret_files import ensure_secret_file
from responder.stacks import PulumiEnvironment, StackOperations
from responder.store import Caps
from responder.store.sqlite import SQLiteStore
from responder.web import api, webhooks
from responder.web.daemon import DAEMON, SETTINGS, Credentials, Daemon
from responder.web.errors import Handler, json_errors

log = get_logger("responder.app")


def create_app(
    settings: Settings,
    *,
    redactor: Redactor | None = None,
    clock: Callable[[], float] = time.time,
    playbooks: list[Playbook] | None = None,
) -> web.Application:
    """Build the app. Playbooks load now, so a broken one stops start-up before anything listens."""
    loaded = playbooks if playbooks is not None else load_playbooks(settings.playbooks_dir)
    reserved = {p.name for p in SYSTEM_PLAYBOOKS} & {p.name for p in loaded}
    if reserved:
        raise PlaybookLoadError(
            f"playbook names reserved for responder itself: {', '.join(sorted(reserved))}"
        )
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[fresh_log_context, json_errors]
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_daemon(loaded, redactor or Redactor(), clock))
    app.on_shutdown.append(_stop_accepting)
    webhooks.setup(app)
    api.setup(app)
    return app


def _daemon(
    playbooks: list[Playbook], redactor: Redactor, clock: Callable[[], float]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        credentials = _credentials(settings, data_dir)
        redactor.add(*credentials.all())
        if not settings.verify_signatures:
            log.warning(
                "webhook.verification_disabled",
                message="RESPONDER_VERIFY_SIGNATURES=false: webhooks are NOT authenticated; for local development only",
            )
        store = SQLiteStore(data_dir / "responder.db")
        await store.open()
        ops = StackOperations(
            PulumiEnvironment.create(data_dir), timeout=settings.job_timeout, redactor=redactor
        )
        await ops.start()
        params = {
            "target_url": settings.probe_url or f"http://{settings.host}:{settings.port}/healthz",
            "scratch_root": str(data_dir / "scratch"),
        }
        by_name = {p.name: p for p in [*playbooks, *SYSTEM_PLAYBOOKS]}
        caps = Caps(
            settings.max_live_stacks,
            settings.max_stacks_per_service,
            settings.max_stacks_per_playbook,
            settings.max_operations_per_minute,
        )
        runner = Runner(
            store,
            ops,
            by_name,
            workers=settings.workers,
            job_timeout=settings.job_timeout,
            retry_backoff=settings.retry_backoff,
            params=params,
            clock=clock,
            caps=caps,
        )
        reaper = Reaper(
            store,
            ops,
            {p.project: p.program for p in playbooks},
            notify=runner.notify,
            max_attempts=settings.job_max_attempts,
            approval_timeout=settings.approval_timeout,
            orphans="report" if settings.orphans == "report" else "destroy",
            orphan_age=settings.orphan_age,
            interval=settings.reaper_interval,
            orphan_interval=settings.orphan_sweep_interval,
            clock=clock,
        )
        daemon = Daemon(
            settings,
            by_name,
            store,
            ops,
            runner,
            reaper,
            redactor,
            credentials,
            clock,
            playbook_order=playbooks,
        )
        app[DAEMON] = daemon
        await runner.start()
        reaper.start()
        daemon.ready = True
        log.info(
            "daemon.started",
            playbooks=list(by_name),
            pulumi=ops.pulumi_version,
            data_dir=str(data_dir),
            workers=settings.workers,
        )
        try:
            yield
        finally:
            daemon.ready = False
            await reaper.stop()
            await runner.stop(settings.shutdown_grace)
            await ops.close()
            await store.close()
            log.info("daemon.stopped")

    return context


async def _stop_accepting(app: web.Application) -> None:
    if DAEMON in app:
        app[DAEMON].accepting = False


def _credentials(settings: Settings, data_dir: Path) -> Credentials:
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


@web.middleware
async def fresh_log_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    return await handler(request)
