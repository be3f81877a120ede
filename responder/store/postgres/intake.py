"""Recording deliveries: each request in its own transaction on a pooled connection."""

# No group commit of our own: concurrent requests run on several connections at once, and PostgreSQL
# already flushes the WAL once for the commits that wait on it together.

from collections.abc import Sequence

from responder.store import NewDelivery, NewJob, RecordedDelivery
from responder.store.postgres import deliveries as delivery_sql
from responder.store.postgres.connection import Connection


class Intake(Connection):
    async def record_delivery(self, delivery: NewDelivery, jobs: list[NewJob]) -> RecordedDelivery:
        return (await self.record_deliveries([(delivery, jobs)]))[0]

    async def record_deliveries(
        self, deliveries: Sequence[tuple[NewDelivery, list[NewJob]]]
    ) -> list[RecordedDelivery]:
        """Committed (synchronous_commit: flushed to the server's disk) before it returns."""
        recorded = await self._write(lambda db: delivery_sql.record_request(db, deliveries))
        if any(
            outcome.job_ids and any(job.delay <= 0 for job in jobs)  # a job runnable now
            for (_, jobs), outcome in zip(deliveries, recorded, strict=True)
        ):
            self._announce()
        return recorded
