"""Job leases shared by nodes: renewing this node's, and taking over those of nodes that are gone."""

from collections.abc import Mapping

from responder.store import Job, StoreUnavailable
from responder.store.postgres import rows
from responder.store.postgres.connection import Connection
from responder.store.postgres.dedicated import Dedicated

# A lease is extended only while its job still runs under the fence its holder knows. A take-over
# holding the row waits for this statement or is waited for, and then this one no longer matches.
RENEW = """
UPDATE jobs AS j SET lease_expires_at = $1
FROM unnest($2::bigint[], $3::integer[]) AS held (id, fence)
WHERE j.id = held.id AND j.status = 'running' AND j.fence = held.fence
RETURNING j.id
"""

CANCELS_REQUESTED = (
    "SELECT id FROM jobs WHERE status = 'running' AND node = $1 AND cancel_requested"
)

# Running jobs whose lease expired, or that have none (left by a version before leases). SKIP
# LOCKED: of two nodes taking over at once, each job goes to the one that locked it first; the
# other passes over it, or, if it was already committed, sees a live lease on it and leaves it.
TAKE_OVER = """
WITH expired AS (
    SELECT id FROM jobs
    WHERE status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $3)
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j SET node = $1, lease_expires_at = $2, fence = j.fence + 1, claim_token = NULL
FROM expired WHERE j.id = expired.id
RETURNING j.*
"""


class Leases(Connection):
    _renewals: Dedicated | None = None

    async def renew_leases(self, fences: Mapping[int, int], now: float) -> set[int]:
        """On a connection of its own: a burst of deliveries may hold every pooled connection for
        seconds, and a renewal that waited for one could make this node stop its jobs."""
        if not fences:
            return set()
        if self._pool is None:
            raise StoreUnavailable("job store unavailable: the store is closed")
        if self._renewals is None:
            self._renewals = Dedicated(self._connect, "leases")
        ids, held = list(fences), list(fences.values())
        until = now + self.lease
        renewed = await self._renewals.run(lambda db: db.fetch(RENEW, until, ids, held))
        return set(ids) - {r["id"] for r in renewed}

    async def close(self) -> None:
        renewals, self._renewals = self._renewals, None
        if renewals is not None:
            await renewals.close()
        await super().close()

    async def cancels_requested(self) -> set[int]:
        found = await self._run(lambda db: db.fetch(CANCELS_REQUESTED, self.node))
        return {row["id"] for row in found}

    async def take_over(self, now: float) -> list[Job]:
        found = await self._run(lambda db: db.fetch(TAKE_OVER, self.node, now + self.lease, now))
        return sorted((rows.job(r) for r in found), key=lambda j: j.id)
