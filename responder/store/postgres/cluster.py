"""What nodes sharing a database tell each other: new work (LISTEN/NOTIFY) and who leads (a lock)."""

# Each runs on a connection of its own, outside the pool: a LISTEN and a session advisory lock live
# as long as their session, and a pooled connection is handed to other work (and reset) in between.
# Both name their node in `application_name`, so pg_stat_activity shows which node leads; both
# have TCP keepalives (`dedicated.KEEPALIVES`), so a dead leader's lock is freed within ~30 s.

import asyncio
from collections.abc import Callable

import asyncpg

from responder.logs import get_logger
from responder.store import StoreUnavailable
from responder.store.postgres.connection import CHANNEL, Connection
from responder.store.postgres.dedicated import Connect, discard
from responder.store.postgres.driver import UNAVAILABLE, describe

log = get_logger("responder.store")

# pg_try_advisory_lock key of the leadership: held by one session at a time, in this database.
LEADER_KEY = 0x7265_7370_5F6C_6561  # "resp_lea"
RETRY_FIRST, RETRY_MAX = 0.2, 30.0  # seconds between attempts to listen again, doubling
# A connection can die without a word (a network partition, a host gone): the listener asks it
# something this often, so that it reconnects rather than waits for notifications that never come.
CHECK_EVERY = 15.0


class Cluster(Connection):
    _listener: "Listener | None" = None
    _leadership: "Leadership | None" = None

    async def listen(self, wake: Callable[[], None]) -> None:
        """Returns once listening, or once the first attempt failed (logged; retried meanwhile)."""
        if self._listener is not None:
            await self._listener.stop()
        self._listener = Listener(self._connect, self.node, wake)
        await self._listener.start()

    async def lead(self) -> bool:
        if self._leadership is None:
            self._leadership = Leadership(self._connect)
        return await self._leadership.check()

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        leadership, self._leadership = self._leadership, None
        if listener is not None:
            await listener.stop()
        if leadership is not None:
            await leadership.release()
        await super().close()


class Listener:
    """LISTENs on a connection of its own, reconnecting (with backoff) whenever it is lost, until
    stopped; calls `wake` for each notification of another node, and once after a reconnection
    (notifications sent while it was away are lost)."""

    def __init__(self, connect: Connect, node: str, wake: Callable[[], None]) -> None:
        self.connect = connect
        self.node = node
        self.wake = wake
        self._first_attempt = asyncio.Event()
        self._retry = RETRY_FIRST  # seconds until the next attempt, after a failure
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-listen")
        self._task.add_done_callback(_ended)
        await self._first_attempt.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        again = False
        while True:
            try:
                db = await self.connect("listen")
                try:
                    await self._listen_on(db, again)
                finally:
                    await discard(db)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # whatever it was, listening goes on: logged, then retried
                log.warning("store.listen_failed", error=describe(e), retry_in=self._retry)
            self._first_attempt.set()
            again = True
            await asyncio.sleep(self._retry)
            self._retry = min(self._retry * 2, RETRY_MAX)

    async def _listen_on(self, db: asyncpg.Connection, again: bool) -> None:
        """Listen on `db` until it is lost (then raise)."""
        lost = asyncio.Event()
        db.add_termination_listener(lambda _db: lost.set())
        await db.add_listener(CHANNEL, self._heard)
        self._first_attempt.set()
        self._retry = RETRY_FIRST
        if again:
            log.info("store.listening_again", channel=CHANNEL)
            self._wake()
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), CHECK_EVERY)
            except TimeoutError:
                await db.fetchval("SELECT 1")
        raise ConnectionError("the listening connection was closed")

    def _heard(self, _db: object, _pid: int, _channel: str, node: object) -> None:
        if node != self.node:  # this node's own work it knows of already
            self._wake()

    def _wake(self) -> None:
        try:
            self.wake()
        except Exception:
            log.exception("store.wake_failed")


def _ended(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:  # only a bug gets here
        log.error("store.listen_stopped", error=describe(task.exception() or Exception()))


class Leadership:
    """A session advisory lock on a connection of its own: held while that session lives. A lost
    connection is replaced, and the lock tried again, at the next check."""

    def __init__(self, connect: Connect) -> None:
        self.connect = connect
        self._db: asyncpg.Connection | None = None
        self._leading = False
        self._checking = asyncio.Lock()  # one check at a time: one connection, one lock

    async def check(self) -> bool:
        async with self._checking:
            while True:
                had_connection = self._db is not None
                try:
                    return await self._check()
                except UNAVAILABLE as e:
                    if self._leading:
                        log.warning("store.leadership_lost", error=describe(e))
                    await self.release()
                    if not had_connection:  # a new connection failed: the database is away
                        raise StoreUnavailable(f"job store unavailable: {describe(e)}") from e
                    # else the old connection died: a new one, and the lock tried again, at once

    async def _check(self) -> bool:
        if self._db is None or self._db.is_closed():
            if self._leading:
                log.warning("store.leadership_lost", error="its connection was closed")
            await self.release()
            self._db = await self.connect("leader")
        if self._leading:
            await self._db.fetchval("SELECT 1")  # the lock lives exactly as long as the session
        else:
            self._leading = bool(
                await self._db.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_KEY)
            )
        return self._leading

    async def release(self) -> None:
        """Give up the leadership: its session ends, and with it the lock."""
        db, self._db, self._leading = self._db, None, False
        if db is not None:
            await discard(db)
