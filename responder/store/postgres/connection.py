"""The PostgreSQL connection pool, its transactions, and driver errors mapped to the store's."""

# Every store method runs on one pooled connection, as one transaction or one statement. What stops
# the store from answering (refused connection, server shutting down, dropped connection, timeouts)
# becomes `StoreUnavailable`, as SQLite's errors do; a deadlock or serialization failure between
# concurrent writers is retried first, since running the transaction again is all PostgreSQL asks.

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from responder.store import StoreUnavailable
from responder.store.postgres import migrations
from responder.store.postgres.driver import UNAVAILABLE, Db

T = TypeVar("T")
Work = Callable[[Db], Awaitable[T]]

ATTEMPTS = 5  # of a transaction that lost a deadlock or a race
# The one unique index a claim can trip over: another claimer started a job on that stack first.
ONE_RUNNING = "jobs_one_running_per_stack"


class Conflict(Exception):
    """A transaction met a concurrent one's write it must see: roll back and run it again."""


class Connection:
    """The pool; the store's parts (intake, queue, stacks, history) build on it."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ) -> None:
        self.url = url  # holds the password: never logged, never in an error message
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.max_connections,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                server_settings={"application_name": "responder"},
                reset=_no_session_state,
            )
        except UNAVAILABLE as e:
            raise StoreUnavailable(f"job store unavailable: {_describe(e)}") from e
        self._pool = pool
        try:
            await self._run(lambda db: migrations.migrate(db, migrations.available()))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.command_timeout)
        except (TimeoutError, *UNAVAILABLE):
            pool.terminate()  # connections still busy or broken: closed without a goodbye

    async def ping(self) -> None:
        await self._run(lambda db: db.fetchval("SELECT 1"))

    async def _run(self, fn: Work[T]) -> T:
        """`fn` on a pooled connection, each statement committed on its own (reads, single updates)."""
        return await self._call(fn, transaction=False)

    async def _write(self, fn: Work[T]) -> T:
        """`fn` on a pooled connection, in one transaction, run again if it lost a race."""
        return await self._call(fn, transaction=True)

    async def _call(self, fn: Work[T], *, transaction: bool) -> T:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("job store unavailable: the store is closed")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with pool.acquire(timeout=self.command_timeout) as db:
                    if not transaction:
                        return await fn(db)
                    async with db.transaction():
                        return await fn(db)
            except (Conflict, asyncpg.TransactionRollbackError) as e:
                if attempt == ATTEMPTS:
                    raise StoreUnavailable(f"job store contended: {_describe(e)}") from e
            except asyncpg.UniqueViolationError as e:
                if e.constraint_name != ONE_RUNNING or attempt == ATTEMPTS:
                    raise StoreUnavailable(f"job store unavailable: {_describe(e)}") from e
            except UNAVAILABLE as e:
                raise StoreUnavailable(f"job store unavailable: {_describe(e)}") from e
        raise AssertionError("unreachable: the last attempt returns or raises")


async def _no_session_state(_db: asyncpg.Connection) -> None:
    """Skip the pool's reset query (one more round trip per store call): the store leaves no
    session state behind (no SET, LISTEN, cursor, or session advisory lock but the migrations',
    released before the connection goes back). asyncpg still rolls back an open transaction."""


def _describe(error: BaseException) -> str:
    """The error for a log line and /readyz: its type and message (neither holds the URL)."""
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text[:300]}"
