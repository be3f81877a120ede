"""Leases with one process per file: renewals and take-overs of jobs, leadership, wake-ups."""

import sqlite3
from collections.abc import Callable, Mapping

from responder.store import Job
from responder.store.sqlite import rows
from responder.store.sqlite.connection import Connection

# A job's lease is extended only while it still runs under the fence its holder knows.
RENEW = "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND status = 'running' AND fence = ?"

CANCELS_REQUESTED = "SELECT id FROM jobs WHERE status = 'running' AND node = ? AND cancel_requested"

# Only one process opens a file, so a running job of another node was left by an earlier life of
# this process (a new node at each start): taken over at once, without waiting for its lease.
TAKE_OVER = """
UPDATE jobs SET node = ?, lease_expires_at = ?, fence = fence + 1, claim_token = NULL
WHERE status = 'running'
  AND (lease_expires_at IS NULL OR lease_expires_at < ? OR node IS NULL OR node != ?)
RETURNING *
"""


class Leases(Connection):
    async def renew_leases(self, fences: Mapping[int, int], now: float) -> set[int]:
        if not fences:
            return set()

        def renew(db: sqlite3.Connection) -> set[int]:
            until = now + self.lease
            return {
                job_id
                for job_id, fence in fences.items()
                if db.execute(RENEW, (until, job_id, fence)).rowcount == 0
            }

        return await self._write(renew)

    async def cancels_requested(self) -> set[int]:
        found = await self._run(lambda db: db.execute(CANCELS_REQUESTED, (self.node,)).fetchall())
        return {row[0] for row in found}

    async def take_over(self, now: float) -> list[Job]:
        def take(db: sqlite3.Connection) -> list[Job]:
            found = db.execute(TAKE_OVER, (self.node, now + self.lease, now, self.node))
            return sorted((rows.job(r) for r in found.fetchall()), key=lambda j: j.id)

        return await self._write(take)

    async def listen(self, wake: Callable[[], None]) -> None:
        """Nothing to hear: no other process writes this file."""

    async def lead(self) -> bool:
        return True
