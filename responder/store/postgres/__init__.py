"""The PostgreSQL job store, for one node or several sharing one database."""

# `PostgresStore` is built from the same parts as the SQLite store: the pool and its transactions
# (`connection`, schema in `migrations`), recording deliveries (`intake`, SQL in `deliveries`), the
# job queue (`queue`), stack records and caps (`stacks`), and what was recorded (`history`).

from responder.store.postgres.history import History
from responder.store.postgres.intake import Intake
from responder.store.postgres.queue import JobQueue
from responder.store.postgres.stacks import StackRecords


class PostgresStore(Intake, JobQueue, StackRecords, History):
    """The shared `Store`: `PostgresStore("postgresql://...")`, then `await store.open()`."""
