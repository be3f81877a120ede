"""The SQLite connection: one file in the data dir, WAL mode, one connection on its own thread.

Every store method runs as one function on that thread, so a transaction is never interleaved with
another coroutine's statements and the event loop never waits on the disk. In the store process
(`responder.store.sqlite.server`), which does nothing else, the functions run inline instead.
"""

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from responder.store import LeaseLost, StoreUnavailable
from responder.store.node import new_node_id
from responder.store.sqlite.rows import holds
from responder.store.sqlite.schema import ensure_schema
from responder.store.sqlite.thread import StoreThread, StoreThreadClosed

T = TypeVar("T")


class Connection:
    """The connection and its thread; the store's parts (intake, queue, stacks, history) build on it."""

    def __init__(
        self, path: Path, *, node: str | None = None, lease: float = 30.0, inline: bool = False
    ) -> None:
        self.path = path
        self.node = node or new_node_id()
        self.lease = lease
        self._inline = inline  # run each call at once, on the event loop's thread
        self._thread = StoreThread("sqlite")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_file(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL for job bookkeeping: in WAL mode a commit survives a crash of this process, and a job
        # whose last state is lost to a power cut is simply recovered and run again. Deliveries are
        # committed with FULL (see `_transaction`): a 2xx survives power loss too.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        # Each delivery of a group commit runs under its own savepoint, whose journal SQLite moves to
        # a temporary file past 64 KiB: one opened, written and deleted per batch, ≈ 45 µs of CPU
        # a delivery (store micro-benchmark, batches of 16). In memory, it is a copy of each page.
        db.execute("PRAGMA temp_store=MEMORY")
        ensure_schema(db)
        self._db = db

    async def close(self) -> None:
        try:
            if self._db is not None:
                await self._call(self._db.close)
                self._db = None
        finally:
            self._thread.stop()

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def _call(self, fn: Callable[[], T], *, slow: bool = False) -> T:
        """`fn` on the store's thread; `slow`: it may take long (see `StoreThread.call`)."""
        try:
            return fn() if self._inline else await self._thread.call(fn, slow=slow)
        except (sqlite3.Error, StoreThreadClosed) as e:
            raise StoreUnavailable(f"job store unavailable: {e}") from e

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the store's thread, each statement committed on its own (reads, single updates)."""
        return await self._call(lambda: fn(self._conn()))

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, slow: bool = False) -> T:
        """`fn` on the store's thread, in one transaction."""
        return await self._call(lambda: self._transaction(fn), slow=slow)

    async def _write_held(
        self, held: tuple[int, int] | None, sql: str, args: Sequence[object]
    ) -> None:
        """One statement in a transaction, made only while `held`, a (job id, fence), still holds
        the job (None: by no job); else nothing is written and `LeaseLost` raised."""

        def write(db: sqlite3.Connection) -> bool:
            if held is not None and not holds(db, *held):
                return False
            db.execute(sql, args)
            return True

        if not await self._write(write):
            raise LeaseLost(held[0] if held else 0)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("store is closed")
        return self._db

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        """Run `fn` in one transaction; `durable` commits with an fsync (and so also makes every
        earlier NORMAL commit durable, since they precede it in the WAL)."""
        db = self._conn()
        if durable:
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            if durable:
                db.execute("PRAGMA synchronous=NORMAL")
        return result


def _private_file(path: Path) -> None:
    """Create the database file (and tighten an existing one) to 0600 whatever the umask: it holds
    every webhook body. SQLite gives its -wal and -shm files the database file's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)
