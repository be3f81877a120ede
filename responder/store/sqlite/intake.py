"""Recording deliveries with group commit: requests arriving while a commit is on the disk share the
next one (one fsync), and each caller is answered with its own outcome."""

import functools

from responder.store.group_commit import GroupCommit, Outcome, Request
from responder.store.sqlite import deliveries as delivery_sql
from responder.store.sqlite.connection import Connection


class Intake(GroupCommit, Connection):
    async def _commit_batch(self, requests: list[Request]) -> list[Outcome]:
        """One transaction on the store's thread, each request under its own savepoint."""
        return await self._call(
            functools.partial(
                self._transaction,
                functools.partial(delivery_sql.record_requests, requests=requests),
                durable=True,
            ),
            slow=True,  # an fsync
        )
