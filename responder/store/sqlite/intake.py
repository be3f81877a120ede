"""Recording deliveries with group commit: requests arriving while a commit is on the disk share the
next one, and each caller is answered with its own outcome."""

import asyncio
import functools
from collections.abc import Sequence
from pathlib import Path

from responder.store import NewDelivery, NewJob, RecordedDelivery, RecordRejected, StoreUnavailable
from responder.store.sqlite import deliveries as delivery_sql
from responder.store.sqlite.connection import Connection

_Pending = tuple[delivery_sql.Request, "asyncio.Future[list[RecordedDelivery]]"]


class Intake(Connection):
    def __init__(self, path: Path, *, node: str | None = None, lease: float = 30.0) -> None:
        super().__init__(path, node=node, lease=lease)
        self._pending: list[_Pending] = []  # waiting for the next commit
        self._committing: list[_Pending] = []  # in the commit on the disk now
        self._committer: asyncio.Task[None] | None = None

    async def record_delivery(self, delivery: NewDelivery, jobs: list[NewJob]) -> RecordedDelivery:
        return (await self.record_deliveries([(delivery, jobs)]))[0]

    async def record_deliveries(
        self, deliveries: Sequence[tuple[NewDelivery, list[NewJob]]]
    ) -> list[RecordedDelivery]:
        """Group commit: requests arriving while a commit is on the disk wait for the next one, and
        all of them share it. Each caller still returns only after its own request is durable."""
        future: asyncio.Future[list[RecordedDelivery]] = asyncio.get_running_loop().create_future()
        self._pending.append((deliveries, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
            self._committer.add_done_callback(self._committer_stopped)
        return await future

    async def _commit_pending(self) -> None:
        """Commit batches until none is pending, resolving each caller's future with its result,
        its request's rejection, or the error that failed the whole commit."""
        while self._pending:
            self._committing, self._pending = self._pending, []
            requests = [request for request, _ in self._committing]
            try:
                outcomes = await self._call(
                    functools.partial(
                        self._transaction,
                        functools.partial(delivery_sql.record_requests, requests=requests),
                        durable=True,
                    )
                )
            except Exception as e:  # handed to every waiting caller
                _fail(self._committing, e)
            else:
                for (_, future), outcome in zip(self._committing, outcomes, strict=True):
                    if future.done():
                        continue  # its caller went away
                    if isinstance(outcome, RecordRejected):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            self._committing = []

    def _committer_stopped(self, task: "asyncio.Task[None]") -> None:
        """The committer was cancelled (the loop is closing; perhaps before it even started) or
        broke: whatever it held or had yet to take, nobody may wait for it forever."""
        if task.cancelled() or task.exception() is not None:
            leftover, self._committing, self._pending = self._committing + self._pending, [], []
            _fail(leftover, StoreUnavailable("the job store stopped committing; retry later"))


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
