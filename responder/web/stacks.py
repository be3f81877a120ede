"""GET /stacks: the store's live stacks, reconciled with a shared, briefly cached backend listing."""

import asyncio
import math
from dataclasses import dataclass

from aiohttp import web

from responder.stacks import StackError, StackOperations
from responder.web.daemon import DAEMON
from responder.web.errors import ApiError
from responder.web.shapes import JSON, stack_json

RECONCILE_INTERVAL = 5.0  # seconds a backend listing serves GET /stacks before the next one

routes = web.RouteTableDef()


@routes.get("/stacks")
async def list_stacks(request: web.Request) -> web.Response:
    """Live burner stacks from the store, reconciled with the backend (`?reconcile=false` skips that).

    The backend's listing is at most RECONCILE_INTERVAL seconds old, and concurrent requests share
    one: each listing starts processes, and this endpoint needs no token."""
    daemon = request.app[DAEMON]
    records = await daemon.store.list_stacks()
    stacks = [stack_json(r, daemon.clock()) for r in records]
    if request.query.get("reconcile", "true").lower() != "false":
        projects = {p.project: p.program for p in daemon.playbook_order} | {
            r.project: r.program for r in records
        }
        for project, program in sorted(projects.items()):
            try:
                in_backend = set(await request.app[LISTINGS].stacks(daemon.ops, project, program))
            except StackError as e:
                raise ApiError(503, f"cannot list the backend's stacks: {e.message}") from None
            stacks += _reconcile(stacks, project, in_backend)
    return web.json_response({"stacks": stacks})


def _reconcile(stacks: list[JSON], project: str, in_backend: set[str]) -> list[JSON]:
    """Mark the project's stacks `in_backend` or not; return the backend's stacks the store does
    not know."""
    unknown = set(in_backend)
    for item in stacks:
        if item["project"] == project:
            item["in_backend"] = item["stack"] in in_backend
            unknown.discard(str(item["stack"]))
    return [
        {"project": project, "stack": name, "status": "unknown to the store", "in_backend": True}
        for name in sorted(unknown)
    ]


@dataclass
class _Listing:
    task: "asyncio.Task[list[str]]"
    ended: float = math.inf  # loop time when the listing ended


class BackendListings:
    """The backend's stacks of each project, listed at most once per `interval` seconds; requests
    arriving while a listing runs wait for that one instead of starting another."""

    def __init__(self, interval: float = RECONCILE_INTERVAL) -> None:
        self.interval = interval
        self._listings: dict[str, _Listing] = {}

    async def stacks(self, ops: StackOperations, project: str, program: str) -> list[str]:
        loop = asyncio.get_running_loop()
        listing = self._listings.get(project)
        if listing is None or loop.time() >= listing.ended + self.interval:
            listing = _Listing(asyncio.create_task(ops.list_stacks(project, program)))
            listing.task.add_done_callback(lambda task: self._ended(listing, task))
            self._listings[project] = listing
        # A client that goes away cancels its own wait, not the listing the others share.
        return await asyncio.shield(listing.task)

    def _ended(self, listing: _Listing, task: "asyncio.Task[list[str]]") -> None:
        listing.ended = asyncio.get_running_loop().time()
        if not task.cancelled():
            task.exception()  # a failure is cached and answered too; retrieved here for asyncio

    async def close(self, _app: web.Application) -> None:
        tasks = [listing.task for listing in self._listings.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


LISTINGS = web.AppKey("backend_listings", BackendListings)


def setup(app: web.Application) -> None:
    app[LISTINGS] = listings = BackendListings()
    app.on_shutdown.append(listings.close)
    app.add_routes(routes)
