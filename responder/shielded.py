"""Work that a cancelled caller leaves running: it goes on, and a failure of it then is logged."""

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from responder.logs import get_logger

log = get_logger("responder")

T = TypeVar("T")

# Work whose caller went, referenced until it ends: the loop itself keeps only weak references.
_left: set["asyncio.Future[Any]"] = set()


async def shielded(
    work: Awaitable[T], what: str, *, expected: tuple[type[BaseException], ...] = ()
) -> T:
    """`await asyncio.shield(work)`. Cancelled meanwhile, the caller goes, the work goes on, and
    nobody awaits it any more: a failure of it is logged (`task.failed_after_cancel`) unless
    `expected` (what the caller would have ignored), instead of left to asyncio's "Task exception
    was never retrieved" at the task's collection."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _left.add(task)
        task.add_done_callback(lambda done: _ended(done, what, expected))
        raise


def _ended(
    task: "asyncio.Future[Any]", what: str, expected: tuple[type[BaseException], ...]
) -> None:
    _left.discard(task)
    if task.cancelled() or (error := task.exception()) is None or isinstance(error, expected):
        return
    log.warning(
        "task.failed_after_cancel", task=what, error=str(error), error_type=type(error).__name__
    )
