"""The PostgreSQL connection pool, its transactions, and driver errors mapped to the store's."""

# Every store method runs on one pooled connection, as one transaction or one statement. What stops
# the store from answering (refused connection, server shutting down, dropped connection, timeouts)
# becomes `StoreUnavailable`, as SQLite's errors do; a deadlock or serialization failure between
# concurrent writers is retried first, since running the transaction again is all PostgreSQL asks.

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from responder.logs import get_logger
from responder.store import RecordRejected, StoreUnavailable
from responder.store.node import new_node_id
from responder.store.postgres import migrations
from responder.store.postgres.dedicated import KEEPALIVES
from responder.store.postgres.driver import UNAVAILABLE, Db, describe

log = get_logger("responder.store")

T = TypeVar("T")
Work = Callable[[Db], Awaitable[T]]

ATTEMPTS = 5  # of a transaction that lost a deadlock or a race
# The one unique index a claim can trip over: another claimer started a job on that stack first.
ONE_RUNNING = "jobs_one_running_per_stack"
# The channel on which a node tells the others it made a job runnable (the payload: its node id).
# Not from the transaction that did it: a notifying transaction holds one lock, for the whole server,
# from just before its commit until it is flushed, so concurrent commits that notify queue on it one
# WAL flush at a time (measured with intake: 22-26 of 32 concurrent deliveries waiting on it, and
# throughput down by a third to a half). Instead, after the commit, one NOTIFY stands for all the
# new work since the last one: at most one in flight per node, and off the caller's path.
CHANNEL = "responder_jobs"
# Each NOTIFY is a commit of its own: under a steady flow of new work there was one per delivery,
# which cost the flow with jobs 5-22 % of its throughput (bench/RESULTS.md). A NOTIFY waits this long
# for what follows it; other nodes hear of new work that much later (this node's own workers are
# woken at once, by the runner).
ANNOUNCE_WINDOW = 0.01  # seconds
CLOSING_NOTIFY_TIMEOUT = 1.0  # seconds: the announcement still pending when the store closes


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
        node: str | None = None,
        lease: float = 30.0,
    ) -> None:
        self.url = url  # holds the password: never logged, never in an error message
        self.node = node or new_node_id()
        self.lease = lease
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._unannounced = False  # new work committed since the last notification was sent

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.max_connections,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                # A transaction under way when its node died holds its locks until the server
                # notices: keepalives make that seconds, not hours.
                server_settings={"application_name": "responder", **KEEPALIVES},
                reset=_no_session_state,
            )
        except UNAVAILABLE as e:
            raise StoreUnavailable(f"job store unavailable: {describe(e)}") from e
        self._pool = pool
        try:
            await self._run(_check_encoding)
            await self._run(lambda db: migrations.migrate(db, migrations.available()))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        announcer, self._announcer = self._announcer, None
        if announcer is not None:
            announcer.cancel()
            await asyncio.gather(announcer, return_exceptions=True)
        if self._unannounced and self._pool is not None:
            # Work made runnable in the last window (jobs a stopping runner handed back): the other
            # nodes hear of it now, not at their next poll. Best effort, briefly.
            self._unannounced = False
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                await asyncio.wait_for(self._notify(), CLOSING_NOTIFY_TIMEOUT)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.command_timeout)
        except (TimeoutError, *UNAVAILABLE):
            pool.terminate()  # connections still busy or broken: closed without a goodbye

    async def _connect(self, role: str) -> asyncpg.Connection:
        """A connection of its own for `role`, named with this node in `application_name` (so
        pg_stat_activity shows which node leads, listens, renews)."""
        connection: asyncpg.Connection = await asyncpg.connect(
            self.url,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            server_settings={
                "application_name": f"responder {role} {self.node}"[:63],
                **KEEPALIVES,
            },
        )
        return connection

    async def ping(self) -> None:
        await self._run(lambda db: db.fetchval("SELECT 1"))

    def _announce(self) -> None:
        """Tell the other nodes, soon, that a job this node committed may be runnable."""
        self._unannounced = True
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._send_announcements(), name="store-notify")

    async def _send_announcements(self) -> None:
        while self._unannounced:
            await asyncio.sleep(ANNOUNCE_WINDOW)
            self._unannounced = False
            try:
                await self._notify()
            except asyncio.CancelledError:
                self._unannounced = True  # perhaps not sent: `close` sends it
                raise
            except StoreUnavailable as e:  # best effort: the other nodes poll too
                log.warning("store.notify_failed", error=str(e))
                return

    async def _notify(self) -> None:
        await self._run(lambda db: db.execute("SELECT pg_notify($1, $2)", CHANNEL, self.node))

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
                    raise StoreUnavailable(f"job store contended: {describe(e)}") from e
            except asyncpg.UniqueViolationError as e:
                if e.constraint_name != ONE_RUNNING or attempt == ATTEMPTS:
                    raise StoreUnavailable(f"job store unavailable: {describe(e)}") from e
            except asyncpg.DataError as e:
                # A value the server cannot take (a NUL in text, a number out of range): the
                # caller's, not an outage, so neither a 503 nor a write retried forever. Its
                # message may quote the value: only its kind is said.
                raise RecordRejected(f"the store cannot hold a value ({type(e).__name__})") from e
            except UNAVAILABLE as e:
                raise StoreUnavailable(f"job store unavailable: {describe(e)}") from e
        raise AssertionError("unreachable: the last attempt returns or raises")


async def _check_encoding(db: Db) -> None:
    """Refuse a database whose text is not UTF-8: the daemon stores Unicode text, and in another
    encoding the server would refuse some of it, which `_call` takes for the caller's error."""
    encoding = await db.fetchval("SHOW server_encoding")
    if encoding != "UTF8":
        raise StoreUnavailable(
            f"the job store's database is encoded {encoding}; responder needs UTF8"
            " (CREATE DATABASE ... ENCODING 'UTF8')"
        )


async def _no_session_state(_db: asyncpg.Connection) -> None:
    """Skip the pool's reset query (one more round trip per store call): the store leaves no
    session state behind (no SET, LISTEN, cursor, or session advisory lock but the migrations',
    released before the connection goes back). asyncpg still rolls back an open transaction."""
