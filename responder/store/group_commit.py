"""Group commit of deliveries, for either store: requests arriving while a commit is under way share
the next one, and each caller is answered with its own outcome once its request is durable."""

import asyncio
from collections.abc import Sequence
from typing import Any

from responder.store import NewDelivery, NewJob, RecordedDelivery, RecordRejected, StoreUnavailable

Request = Sequence[tuple[NewDelivery, list[NewJob]]]
# What a batch's commit gives each request: its outcome, the refusal of that request alone, or the
# store's failure, when it failed after other requests of the batch were committed.
Outcome = list[RecordedDelivery] | RecordRejected | StoreUnavailable
_Pending = tuple[Request, "asyncio.Future[list[RecordedDelivery]]"]


class GroupCommit:
    """The batching; a store's intake says how one batch is committed (`_commit_batch`)."""

    # Requests in one commit at most (None: all that are waiting). A batch holds the locks of all
    # its deliveries until it commits, so a store whose writers run side by side caps it.
    max_batch: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[_Pending] = []  # waiting for the next commit
        self._committing: list[_Pending] = []  # in the commit under way
        self._committer: asyncio.Task[None] | None = None

    async def _commit_batch(self, requests: list[Request]) -> list[Outcome]:
        """Record and commit `requests` durably, in order; raise to fail them all."""
        raise NotImplementedError

    async def record_delivery(self, delivery: NewDelivery, jobs: list[NewJob]) -> RecordedDelivery:
        return (await self.record_deliveries([(delivery, jobs)]))[0]

    async def record_deliveries(
        self, deliveries: Sequence[tuple[NewDelivery, list[NewJob]]]
    ) -> list[RecordedDelivery]:
        """Group commit: requests arriving while a commit is under way wait for the next one, and
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
            cut = len(self._pending) if self.max_batch is None else self.max_batch
            self._committing, self._pending = self._pending[:cut], self._pending[cut:]
            try:
                outcomes = await self._commit_batch([request for request, _ in self._committing])
            except Exception as e:  # handed to every waiting caller
                _fail(self._committing, e)
            else:
                for (_, future), outcome in zip(self._committing, outcomes, strict=True):
                    if future.done():
                        continue  # its caller went away
                    if isinstance(outcome, (RecordRejected, StoreUnavailable)):
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
