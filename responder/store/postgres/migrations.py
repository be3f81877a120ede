"""Numbered SQL migrations, applied once each at open() under an advisory lock, in schema_migrations."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from responder.store import StoreUnavailable
from responder.store.postgres.driver import Db

DIRECTORY = Path(__file__).resolve().parent.parent / "migrations" / "postgres"
# pg_advisory_lock key held while migrating: nodes starting together take turns, and each finds the
# schema as the one before it left it. Advisory keys are per database, so databases never contend.
LOCK_KEY = 0x7265_7370_6F6E_6472  # "respondr"
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available(directory: Path = DIRECTORY) -> list[Migration]:
    """The migrations shipped, in order; versions run 1, 2, 3... with no gap, so none is skipped."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: a migration is named NNNN_words.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"{directory}: migration versions must run 1, 2, 3...; found {versions}")
    return found


async def migrate(db: Db, migrations: list[Migration]) -> list[int]:
    """Apply the migrations `db`'s database lacks, each in its own transaction with its record;
    return the versions applied. Refuse a database changed by a newer responder, or whose recorded
    migration differs from the file of the same number (the schema would not be what we think)."""
    applied: list[int] = []
    await db.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        # Made only when missing: CREATE ... IF NOT EXISTS still needs the right to create in the
        # schema, which a role that only uses a migrated database need not have.
        if await db.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await db.execute(TABLE)
        recorded = {
            r["version"]: r["checksum"]
            for r in await db.fetch("SELECT version, checksum FROM schema_migrations")
        }
        newer = sorted(set(recorded) - {m.version for m in migrations})
        if newer:
            raise StoreUnavailable(
                f"the job store has schema migrations {newer} that this responder does not know:"
                " run a newer responder"
            )
        for migration in migrations:
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    raise StoreUnavailable(
                        f"schema migration {migration.version} ({migration.name}) differs from the"
                        " one applied to the job store: never edit an applied migration, add one"
                    )
                continue
            async with db.transaction():
                await db.execute(migration.sql)
                await db.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied.append(migration.version)
    finally:
        if not db.is_closed():
            await db.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied
