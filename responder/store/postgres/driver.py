"""What the store's modules share of asyncpg: the connection type and the errors of an outage."""

from typing import TYPE_CHECKING, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A pooled connection, or a plain one (tools, tests): the store's SQL runs on either.
if TYPE_CHECKING:  # generic in the stubs only
    Db: TypeAlias = PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]
else:
    Db = PoolConnectionProxy | asyncpg.Connection

# What stops the store from answering: a server error, a broken or refused connection, a timeout.
# InternalClientError: asyncpg's state after the server ended an idle session (pg_terminate_backend,
# a restart) may refuse the next query so before it sees the connection closed.
UNAVAILABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def describe(error: BaseException) -> str:
    """The error for a log line and /readyz: its type and message (neither holds the URL)."""
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text[:300]}"
