"""The PostgreSQL job store, for one node or several sharing one database."""

# `PostgresStore` is built from the same parts as the SQLite store: the pool and its transactions
# (`connection`, schema in `migrations`), recording deliveries (`intake`, SQL in `deliveries`), the
# job queue (`queue`) and its leases (`leases`), stack records and caps (`stacks`), notes for
# incidents and chat (`notes`), what was recorded (`history`), and what nodes tell each other: new
# work, and who leads (`cluster`).

from responder.store.postgres.cluster import Cluster
from responder.store.postgres.history import History
from responder.store.postgres.intake import Intake
from responder.store.postgres.leases import Leases
from responder.store.postgres.notes import Notes
from responder.store.postgres.queue import JobQueue
from responder.store.postgres.stacks import StackRecords


class PostgresStore(Cluster, Intake, JobQueue, Leases, StackRecords, Notes, History):
    """The shared `Store`: `PostgresStore("postgresql://...")`, then `await store.open()`."""

    shared = True  # other nodes take over the jobs whose leases this node failed to renew
