"""Store health as the runner and the reaper see it: which store calls are failing, and why."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from responder import metrics
from responder.logs import get_logger
from responder.store import StoreUnavailable

T = TypeVar("T")

log = get_logger("responder.health")


class StoreHealth:
    """Store calls that failed and have not succeeded since, by caller. While any has, the daemon is
    not ready (/readyz answers 503 naming it)."""

    def __init__(self, *, first_delay: float = 0.1, max_delay: float = 5.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._failing: dict[str, str] = {}

    @property
    def problem(self) -> str | None:
        """The oldest failure still unresolved (and how many others), or None when all is well."""
        if not self._failing:
            return None
        caller, error = next(iter(self._failing.items()))
        others = len(self._failing) - 1
        return f"{caller}: {error}" + (f" (and {others} more)" if others else "")

    def failed(self, caller: str, error: str) -> None:
        metrics.store_error("background")
        if caller not in self._failing:
            log.error("store.unavailable", caller=caller, error=error)
        self._failing[caller] = error

    def recovered(self, caller: str) -> None:
        if self._failing.pop(caller, None) is not None:
            log.info("store.recovered", caller=caller)

    async def call(self, caller: str, fn: Callable[[], Awaitable[T]]) -> T:
        """`await fn()` until it succeeds: each StoreUnavailable is reported and retried with
        exponential backoff. Only cancellation (the daemon stopping) ends the wait otherwise."""
        delay = self.first_delay
        while True:
            try:
                result = await fn()
            except StoreUnavailable as e:
                self.failed(caller, str(e))
                log.warning("store.retrying", caller=caller, error=str(e), delay_seconds=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            self.recovered(caller)
            return result
