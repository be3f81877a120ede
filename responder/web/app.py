"""The application factory: settings in, a ready aiohttp app out (no module-level state)."""

import asyncio
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import StreamReader, web
from aiohttp.typedefs import Middleware

from responder.config import Settings
from responder.health import StoreHealth
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
from responder.web.errors import Handler, error_response, json_errors

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
        client_max_size=settings.max_body_bytes,
        middlewares=[fresh_log_context, json_errors, body_deadline(settings.body_timeout)],
        # Bodies are read as sent: no pager compresses its webhooks, and decompressing a hostile
        # body is a bomb; webhooks answer any Content-Encoding with a 415.
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_daemon(loaded, redactor or Redactor(), clock))
    app.on_shutdown.append(_stop_accepting)
    webhooks.setup(app)
    api.setup(app)
    return app


def server_options(settings: Settings) -> dict[str, Any]:
    """Options for aiohttp's server (`web.run_app`, `web.AppRunner`). Its keep-alive timer starts
    when a connection opens and closes it if no complete request head has arrived by then: that
    is our timeout for reading headers (the body has its own, see `body_deadline`)."""
    return {"keepalive_timeout": settings.header_timeout, "access_log": None}


def _daemon(
    playbooks: list[Playbook], redactor: Redactor, clock: Callable[[], float]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        # Everything the daemon and its workers create (the store with whole webhook bodies,
        # postmortem exports, workspaces, scratch) is for its user only: files 0600, dirs 0700.
        umask = os.umask(0o077)
        try:
            async for _ in _run_daemon(app, playbooks, redactor, clock):
                yield
        finally:
            os.umask(umask)

    return context


async def _run_daemon(
    app: web.Application,
    playbooks: list[Playbook],
    redactor: Redactor,
    clock: Callable[[], float],
) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    data_dir = settings.data_dir.resolve()
    _prepare_data_dir(data_dir)
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
    health = StoreHealth()  # the runner's and the reaper's store failures, for /readyz
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
        health=health,
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
        retention=settings.retention,
        clock=clock,
        health=health,
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


def _prepare_data_dir(path: Path) -> None:
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


class BodyTimeout(TimeoutError):
    """The client did not send the whole request body in time.

    A TimeoutError, so that aiohttp, draining the unread body after our answer, stops at once and
    closes the connection instead of logging an unexpected error."""


def body_deadline(timeout: float) -> Middleware:
    """A body not complete `timeout` seconds after its headers fails to read; the answer is 408 and
    the connection closes, so a slow sender cannot hold a connection (and a handler) forever."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = request.content
        if body.is_eof():  # no body, or all of it already arrived
            return await handler(request)
        timer = asyncio.get_running_loop().call_later(timeout, _expire, body)
        try:
            return await handler(request)
        except BodyTimeout:
            log.warning("http.body_timeout", path=request.path, timeout_seconds=timeout)
            response = error_response(408, f"the request body did not arrive within {timeout:g}s")
            response.force_close()
            return response
        finally:
            timer.cancel()

    return middleware


def _expire(body: StreamReader) -> None:
    if not body.is_eof():
        body.set_exception(BodyTimeout())
