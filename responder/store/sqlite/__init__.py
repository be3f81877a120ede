"""The SQLite job store: one file in the data dir, its connection on a thread of its own.

`SQLiteStore` is the one class the daemon imports. It implements `responder.store.Store` from parts
that each have one reason to change: the connection and its transactions (`connection`), recording
deliveries with group commit (`intake`, SQL in `deliveries`), the job queue (`queue`), its leases
(`leases`), stack records and caps (`stacks`), notes for incidents and chat (`notes`), and reading
back and pruning what was recorded (`history`).
"""

from responder.store.sqlite.history import History
from responder.store.sqlite.intake import Intake
from responder.store.sqlite.leases import Leases
from responder.store.sqlite.notes import Notes
from responder.store.sqlite.queue import JobQueue
from responder.store.sqlite.stacks import StackRecords


class SQLiteStore(Intake, JobQueue, Leases, StackRecords, Notes, History):
    """The embedded `Store`: `SQLiteStore(path)`, then `await store.open()`."""

    shared = False  # one process per file: no other node can take its jobs over
