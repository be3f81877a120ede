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
UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
