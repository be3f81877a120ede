"""Where a runner's idle workers wait for work: an announcement wakes one, and none is ever lost."""

import asyncio
import contextlib
from collections import deque


class IdleWorkers:
    """Idle workers wait here, first come first woken.

    An announcement of work wakes one waiting worker, which announces again once it has claimed a
    job, so a burst of jobs wakes worker after worker while a single job wakes one, not all of them
    (each woken worker costs a claim, a round trip to the store). A worker still looking for work
    when it was announced does not wait at all: it looks again.
    """

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._announcements = 0

    def mark(self) -> int:
        """Taken before a look for work; `wait` returns at once if work was announced since."""
        return self._announcements

    def announce(self, *, everyone: bool = False) -> None:
        """Work may be due: wake the first waiting worker, or `everyone` (a stop)."""
        self._announcements += 1
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not one that timed out meanwhile
                waiter.set_result(None)
                if not everyone:
                    return

    async def wait(self, mark: int, timeout: float) -> None:
        """Until this worker is woken, or `timeout` seconds."""
        if self._announcements != mark:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            with contextlib.suppress(ValueError):  # already taken by an announcement
                self._waiting.remove(waiter)
