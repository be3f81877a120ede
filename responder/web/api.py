"""The JSON API: health and readiness here, and the routes of jobs, stacks and playbooks."""

import asyncio

from aiohttp import web

from responder.store import StoreUnavailable
from responder.web import jobs, openapi, playbooks, stacks
from responder.web.daemon import DAEMON

READY_STORE_TIMEOUT = 2.0  # seconds /readyz waits for the store: a probe must answer promptly

routes = web.RouteTableDef()


@routes.get("/")
async def root(_request: web.Request) -> web.Response:
    return web.json_response({"response": "OK"})


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers, the CLI was found, playbooks are loaded, and the runner and
    reaper are running with no store call failing (they retry it, and this says why they wait)."""
    daemon = request.app[DAEMON]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_STORE_TIMEOUT):
            await daemon.store.ping()
        checks["store"] = "ok"
    except StoreUnavailable as e:
        checks["store"] = str(e)
    except TimeoutError:
        checks["store"] = f"no answer within {READY_STORE_TIMEOUT:g}s (busy or locked)"
    checks["pulumi"] = (
        f"ok ({daemon.ops.pulumi_version})" if daemon.ops.pulumi_version else "not found"
    )
    loaded = daemon.playbook_order  # the operator's playbooks, not responder's own
    checks["playbooks"] = f"ok ({len(loaded)})" if loaded else "none loaded"
    problem = daemon.runner.health.problem
    checks["runner"] = (
        "starting"
        if not daemon.ready
        else f"waiting for the store ({problem})"
        if problem
        else "ok"
    )
    ready = all(v.startswith("ok") for v in checks.values())
    return web.json_response(
        # `node` tells apart the processes behind one address (several processes, several nodes).
        {"status": "ready" if ready else "not ready", "node": daemon.store.node, "checks": checks},
        status=200 if ready else 503,
    )


def setup(app: web.Application) -> None:
    app.add_routes(routes)
    app.add_routes(jobs.routes)
    app.add_routes(playbooks.routes)
    app.add_routes(openapi.routes)
    stacks.setup(app)
