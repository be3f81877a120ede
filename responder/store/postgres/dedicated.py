"""Connections of their own, outside the pool, for work that must not wait for one or outlive one."""

# The LISTEN and the leader's lock live as long as their session; lease renewals must answer within
# seconds even while deliveries hold every pooled connection. If the node's machine dies without a
# word (power lost, a partition), the server learns it only from TCP: by default after about two
# hours, all that time holding the leadership, or the row and advisory locks of a transaction under
# way. Keepalives close such a session within ~30 s: probes after 10 s of silence, every 5 s, the
# 4th unanswered ends it; and `tcp_user_timeout` ends it as soon when data sent to the node (a reply
# in flight as it died, a notification) goes unacknowledged, which keepalives do not cover.

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from responder.store import StoreUnavailable
from responder.store.postgres.driver import UNAVAILABLE, describe

T = TypeVar("T")
Connect = Callable[[str], Awaitable[asyncpg.Connection]]

KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "4",
    "tcp_user_timeout": "30000",  # milliseconds
}
ATTEMPTS = 5  # of a statement that lost a deadlock


class Dedicated:
    """One connection for one kind of work (`role`): opened when first needed, used by one call at
    a time, replaced when lost. A call that fails on a connection made earlier is tried once more at
    once on a new one (the server may have ended the old one): only idempotent work belongs here."""

    def __init__(self, connect: Connect, role: str) -> None:
        self.connect = connect
        self.role = role
        self._db: asyncpg.Connection | None = None
        self._using = asyncio.Lock()
        self._closed = False

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._using:
            attempt = 0
            while True:
                attempt += 1
                if self._closed:
                    raise StoreUnavailable("job store unavailable: the store is closed")
                if self._db is not None and self._db.is_closed():
                    self._drop()
                fresh = self._db is None
                try:
                    if self._db is None:
                        self._db = await self.connect(self.role)
                    return await fn(self._db)
                except asyncpg.TransactionRollbackError as e:
                    if attempt >= ATTEMPTS:
                        raise StoreUnavailable(f"job store contended: {describe(e)}") from e
                except UNAVAILABLE as e:
                    self._drop()
                    if fresh or attempt >= ATTEMPTS:
                        raise StoreUnavailable(f"job store unavailable: {describe(e)}") from e
                except BaseException:
                    # Cancelled mid-statement (a caller's timeout): what the session still does is
                    # unknown, so the next call starts on a new one.
                    self._drop()
                    raise

    async def close(self) -> None:
        """Close the connection, without waiting for a call under way: it fails instead."""
        self._closed = True
        db, self._db = self._db, None
        if db is not None:
            await discard(db)

    def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.terminate()


async def discard(db: asyncpg.Connection) -> None:
    """Close a dedicated connection: politely if it answers in time, else at once."""
    with contextlib.suppress(*UNAVAILABLE):
        await asyncio.wait_for(db.close(), 5.0)
        return
    db.terminate()
