"""The HTTP application: middlewares, routes and server options over the daemon's parts."""

import asyncio
from typing import Any

import structlog
from aiohttp import StreamReader, web
from aiohttp.typedefs import Middleware

from responder.config import Settings
from responder.logs import get_logger
from responder.web import api, metrics, ui, webhooks
from responder.web.auth import read_auth
from responder.web.daemon import DAEMON, SETTINGS
from responder.web.errors import Handler, error_response, json_errors
from responder.web.hosts import host_check

log = get_logger("responder.app")


def http_app(settings: Settings) -> web.Application:
    """The HTTP surface alone: middlewares and routes over the parts the daemon stores in the app
    (`responder.web.daemon`)."""
    hosts = host_check(settings.host, settings.allowed_hosts)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            fresh_log_context,
            *([hosts] if hosts else []),
            json_errors,
            body_deadline(settings.body_timeout),
            *([read_auth] if settings.read_auth else []),
        ],
        # Bodies are read as sent: no pager compresses its webhooks, and decompressing a hostile
        # body is a bomb; webhooks answer any Content-Encoding with a 415.
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    app.on_shutdown.append(_stop_accepting)
    webhooks.setup(app)
    api.setup(app)
    ui.setup(app)
    metrics.setup(app)
    return app


def server_options(settings: Settings) -> dict[str, Any]:
    """Options for aiohttp's server (`web.run_app`, `web.AppRunner`). Its keep-alive timer starts
    when a connection opens and closes it if no complete request head has arrived by then: that
    is our timeout for reading headers (the body has its own, see `body_deadline`)."""
    return {"keepalive_timeout": settings.header_timeout, "access_log": None}


async def _stop_accepting(app: web.Application) -> None:
    if DAEMON in app:
        app[DAEMON].accepting = False


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
