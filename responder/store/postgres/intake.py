"""Recording deliveries with group commit: the requests waiting while a transaction is under way
share the next one (one lock statement, one commit), and each caller gets its own outcome."""

# Measured under wrk (bench/intake.py): a transaction per request took five round trips and a
# commit for each delivery, and PostgreSQL spent about as much CPU on them as responder did.

from collections.abc import Awaitable, Sequence

from responder.logs import get_logger
from responder.store import (
    NewDelivery,
    NewJob,
    RecordedDelivery,
    RecordRejected,
    StoreUnavailable,
)
from responder.store.group_commit import GroupCommit, Outcome, Request
from responder.store.limits import refuse_unstorable
from responder.store.postgres import deliveries as delivery_sql
from responder.store.postgres.connection import Connection
from responder.store.postgres.driver import Db

log = get_logger("responder.store")


class Intake(GroupCommit, Connection):
    max_batch = 64

    async def record_deliveries(
        self, deliveries: Sequence[tuple[NewDelivery, list[NewJob]]]
    ) -> list[RecordedDelivery]:
        """Committed (synchronous_commit: flushed to the server's disk) before it returns."""
        # Refused before it joins a commit: refused there, it would abort the commit, and every
        # request of it would be committed again on its own (`_commit_batch`).
        for delivery, jobs in deliveries:
            refuse_unstorable(delivery, jobs, nul=True)
        recorded = await super().record_deliveries(deliveries)
        if any(
            outcome.job_ids and any(job.delay <= 0 for job in jobs)  # a job runnable now
            for (_, jobs), outcome in zip(deliveries, recorded, strict=True)
        ):
            self._announce()
        return recorded

    async def _commit_batch(self, requests: list[Request]) -> list[Outcome]:
        try:
            return list(await self._commit(requests))
        except RecordRejected as e:
            if len(requests) == 1:
                return [e]
        # A value the server refused aborts the whole transaction: each request again on its own,
        # so that only the refused one fails. If the store goes away meanwhile, those left fail
        # with it at once, and those committed keep their answer (not a 503 for a stored delivery).
        outcomes: list[Outcome] = []
        for n, request in enumerate(requests):
            try:
                outcomes += await self._commit([request])
            except RecordRejected as e:
                outcomes.append(e)
            except StoreUnavailable as e:
                return outcomes + [e] * (len(requests) - n)
        return outcomes

    async def _commit(self, requests: list[Request]) -> list[list[RecordedDelivery]]:
        parked: list[int] = []

        def record(db: Db) -> Awaitable[list[list[RecordedDelivery]]]:
            parked.clear()  # of a try that ran again
            return delivery_sql.record_requests(db, requests, parked)

        recorded = await self._write(record)
        if parked:  # committed: a failure now is no reason to answer 503 (the reaper's net)
            try:
                await self._write(lambda db: delivery_sql.unpark_if_ended(db, parked))
            except StoreUnavailable as e:
                log.warning("store.unpark_failed", job_ids=parked, error=str(e))
        return recorded
