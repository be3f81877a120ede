"""GET /metrics: the Prometheus exposition of every process's metrics and of the job store's gauges."""

import asyncio
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from responder import metrics
from responder.logs import get_logger
from responder.sources import InvalidDelivery, Unauthorized
from responder.store import JobStatus, RecordRejected, StackStatus, Store, StoreUnavailable
from responder.web.daemon import DAEMON
from responder.web.errors import ApiError

log = get_logger("responder.metrics")

STORE_TIMEOUT = 2.0  # seconds a scrape waits for the store (Prometheus' own timeout is 10 s)

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics_page(request: web.Request) -> web.Response:
    daemon = request.app.get(DAEMON)  # absent while starting: the process's metrics alone
    store_gauges = await read_store_gauges(daemon.store) if daemon is not None else []
    encode, content_type = _encoder(request.headers.get("Accept", ""))
    # Reading every process's files is disk I/O: off the event loop.
    body = await asyncio.to_thread(encode, Scrape(store_gauges))
    return web.Response(body=body, headers={"Content-Type": content_type})


def _encoder(accept: str) -> tuple[Callable[[Collector], bytes], str]:
    """The format the scraper asks for; the classic text format for an `Accept` prometheus_client
    cannot read (a version such as `x` or `1.x` raises inside it: a 500 anyone could ask for)."""
    try:
        return choose_encoder(accept)
    except (TypeError, ValueError):
        return choose_encoder("")


async def read_store_gauges(store: Store) -> list[Metric]:
    """Queue depth by status and live stacks, as the store has them now (shared by all the
    processes and nodes on it). Empty when the store does not answer in time: the scrape still
    succeeds, the failure is counted, and Prometheus marks the gauges stale instead of wrong."""
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            depth = await store.unfinished_job_counts()
            stacks = await store.list_stacks()
    except (StoreUnavailable, TimeoutError) as e:
        metrics.store_error("metrics")
        error = str(e) or f"no answer within {STORE_TIMEOUT:g}s"
        log.warning("metrics.store_unavailable", error=error)
        return []
    except Exception:  # any other fault: logged whole, and the scrape still answers
        metrics.store_error("metrics")
        log.exception("metrics.store_read_failed")
        return []
    queue = GaugeMetricFamily(
        "responder_queue_depth",
        "Jobs not finished, by status, in the job store.",
        labels=["status"],
    )
    for status in JobStatus:
        if not status.final:  # a status with none is a 0, not a missing series
            queue.add_metric([status.value], depth.get(status, 0))
    live = sum(1 for stack in stacks if stack.status == StackStatus.LIVE)
    return [
        queue,
        GaugeMetricFamily(
            "responder_live_stacks", "Burner stacks live in the job store's record.", value=live
        ),
    ]


class Scrape(Collector):
    """This scrape's metrics: every process's (multiprocess mode) or this one's, then the store's."""

    def __init__(self, store_gauges: Iterable[Metric]) -> None:
        path = metrics.multiprocess_dir()
        self.processes: Collector = REGISTRY
        if path:  # reads the files of every process, live or ended (its module is untyped)
            self.processes = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self.store_gauges = store_gauges

    def collect(self) -> Iterator[Metric]:
        yield from self.processes.collect()
        yield from self.store_gauges


def setup(app: web.Application) -> None:
    app.add_routes(routes)


REASONS_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    408: "body_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    503: "shutting_down",  # the store's own 503 is a StoreUnavailable, matched before
}


def rejection_reason(error: BaseException) -> str:
    """Why a webhook request was refused, as one of a few fixed words (a metric label)."""
    match error:
        case InvalidDelivery() | RecordRejected():
            return "invalid"
        case Unauthorized():
            return "unauthorized"
        case StoreUnavailable():
            return "store_unavailable"
        case ApiError() | web.HTTPException():
            return REASONS_BY_STATUS.get(error.status, f"http_{error.status}")
        case TimeoutError():  # the body did not arrive in time (`app.body_deadline`)
            return "body_timeout"
    return "internal_error"
