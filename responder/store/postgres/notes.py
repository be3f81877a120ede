"""Notes queued with job results: inserted by `finish`, claimed and settled by the delivery loop."""

from collections.abc import Sequence

from responder.store import NewNote, NoteRecord, NoteStatus
from responder.store.limits import storable
from responder.store.postgres.connection import Connection
from responder.store.postgres.driver import Db
from responder.store.rows import note

INSERT = (
    "INSERT INTO notes (job_id, destination, target, body, key, status, created_at, not_before)"
    " VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6)"
)
# Due notes, pending or left `sending` by a node whose lease expired. SKIP LOCKED: nodes claiming at
# once pass over each other's rows, so a note is never claimed (and sent) by two at a time. `was`
# keeps the status a note had before this claim.
CLAIM = """
WITH due AS (
    SELECT id, status AS was FROM notes
    WHERE (status = 'pending' AND not_before <= $1) OR (status = 'sending' AND lease_expires_at < $1)
    ORDER BY id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE notes AS n SET status = 'sending', attempts = n.attempts + 1, node = $2, lease_expires_at = $3
FROM due WHERE n.id = due.id
RETURNING n.*, due.was
"""
SETTLE = """
UPDATE notes SET status = $1, last_error = $2, not_before = $3, lease_expires_at = NULL,
    sent_at = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at END
WHERE id = $5 AND status = 'sending' AND attempts = $6 AND node = $7
"""
NEXT_DUE = """
SELECT MIN(CASE status WHEN 'pending' THEN not_before ELSE lease_expires_at END)
FROM notes WHERE status IN ('pending', 'sending')
"""


async def insert_notes(db: Db, job_id: int, notes: Sequence[NewNote], now: float) -> None:
    await db.executemany(
        INSERT, [(job_id, n.destination, n.target, n.body, n.key, now) for n in notes]
    )


class Notes(Connection):
    async def claim_notes(self, now: float, limit: int, lease: float) -> list[NoteRecord]:
        found = await self._write(lambda db: db.fetch(CLAIM, now, self.node, now + lease, limit))
        claimed = [note(r, resumed=r["was"] == NoteStatus.SENDING) for r in found]
        return sorted(claimed, key=lambda n: n.id)

    async def settle_note(
        self,
        note_id: int,
        attempt: int,
        status: NoteStatus,
        now: float,
        *,
        error: str | None = None,
        not_before: float = 0.0,
    ) -> bool:
        args = (status.value, storable(error), not_before, now, note_id, attempt, self.node)
        return await self._run(lambda db: db.execute(SETTLE, *args)) == "UPDATE 1"

    async def next_note_due(self) -> float | None:
        due: float | None = await self._run(lambda db: db.fetchval(NEXT_DUE))
        return due

    async def job_notes(self, job_id: int) -> list[NoteRecord]:
        found = await self._run(
            lambda db: db.fetch("SELECT * FROM notes WHERE job_id = $1 ORDER BY id", job_id)
        )
        return [note(r) for r in found]
