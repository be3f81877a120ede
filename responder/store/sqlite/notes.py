"""Notes queued with job results: inserted by `finish`, claimed and settled by the delivery loop."""

import sqlite3
from collections.abc import Sequence

from responder.store import NewNote, NoteRecord, NoteStatus
from responder.store.limits import storable
from responder.store.rows import note
from responder.store.sqlite.connection import Connection

INSERT = (
    "INSERT INTO notes (job_id, destination, target, body, key, status, created_at, not_before)"
    " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)"
)
# Due: pending and its time has come, or sending under a lease that expired, or (one process per
# file) claimed by an earlier process of this store, which is gone.
DUE = (
    "SELECT * FROM notes WHERE (status = 'pending' AND not_before <= ?)"
    " OR (status = 'sending' AND (lease_expires_at < ? OR node IS NOT ?)) ORDER BY id LIMIT ?"
)


def insert_notes(db: sqlite3.Connection, job_id: int, notes: Sequence[NewNote], now: float) -> None:
    db.executemany(
        INSERT, [(job_id, n.destination, n.target, n.body, n.key, now, now) for n in notes]
    )


class Notes(Connection):
    async def claim_notes(self, now: float, limit: int, lease: float) -> list[NoteRecord]:
        def claim(db: sqlite3.Connection) -> list[NoteRecord]:
            claimed = []
            for row in db.execute(DUE, (now, now, self.node, limit)).fetchall():
                updated = db.execute(
                    "UPDATE notes SET status = 'sending', attempts = attempts + 1, node = ?,"
                    " lease_expires_at = ? WHERE id = ? RETURNING *",
                    (self.node, now + lease, row["id"]),
                ).fetchone()
                claimed.append(note(updated, resumed=row["status"] == NoteStatus.SENDING))
            return claimed

        return await self._write(claim)

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
        cursor = await self._run(
            lambda db: db.execute(
                "UPDATE notes SET status = ?, last_error = ?, not_before = ?, lease_expires_at = NULL,"
                " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END"
                " WHERE id = ? AND status = 'sending' AND attempts = ? AND node = ?",
                (
                    status.value,
                    storable(error),
                    not_before,
                    status.value,
                    now,
                    note_id,
                    attempt,
                    self.node,
                ),
            )
        )
        return cursor.rowcount == 1

    async def next_note_due(self) -> float | None:
        def due(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                "SELECT MIN(CASE status WHEN 'pending' THEN not_before ELSE lease_expires_at END)"
                " FROM notes WHERE status IN ('pending', 'sending')"
            ).fetchone()
            return row[0] if row and row[0] is not None else None

        return await self._run(due)

    async def job_notes(self, job_id: int) -> list[NoteRecord]:
        return await self._run(
            lambda db: [
                note(r)
                for r in db.execute("SELECT * FROM notes WHERE job_id = ? ORDER BY id", (job_id,))
            ]
        )
