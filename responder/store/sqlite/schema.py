"""The SQLite store's tables, and the upgrade of a store written by an earlier version."""

import hashlib
import sqlite3
from collections.abc import Callable

VERSION = 5  # PRAGMA user_version of a store with this schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    digest TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL REFERENCES payloads (digest),
    received_at REAL NOT NULL,
    dedupe_key TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_incident ON deliveries (incident_id);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (source, event_id);
CREATE INDEX IF NOT EXISTS deliveries_payload ON deliveries (payload);
CREATE INDEX IF NOT EXISTS deliveries_dedupe ON deliveries (dedupe_key, received_at)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries (received_at);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    playbook TEXT NOT NULL,
    project TEXT NOT NULL,
    stack TEXT NOT NULL,
    event TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    coalesce INTEGER NOT NULL DEFAULT 0,
    coalesced_into INTEGER,
    cancel_on TEXT NOT NULL DEFAULT '[]',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    plan TEXT,
    approved_plan TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    outputs TEXT,
    node TEXT,
    lease_expires_at REAL,
    fence INTEGER NOT NULL DEFAULT 0,
    claim_token TEXT,
    parked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, project, stack, id);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_incident ON jobs (incident_id, id);
CREATE INDEX IF NOT EXISTS jobs_delivery ON jobs (delivery_id);
-- Waiting jobs with a time (scheduled, retries): an idle worker's `next_due` reads only these,
-- not every queued job (17 ms at 13,000 queued).
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, not_before) WHERE not_before > 0;
-- Jobs queued behind a running one are parked, and the claim's walk passes over them (as
-- PostgreSQL's migration 0011 says): recorded while their stack runs a job, each unparked in turn
-- as the job before it leaves the queue or the running state other than by being claimed.
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (id) WHERE status = 'queued' AND parked = 0;
CREATE INDEX IF NOT EXISTS jobs_parked ON jobs (project, stack, id)
    WHERE status = 'queued' AND parked = 1;
CREATE TRIGGER IF NOT EXISTS jobs_unpark_next AFTER UPDATE OF status ON jobs
WHEN OLD.status IN ('running', 'queued') AND NEW.status NOT IN ('running', 'queued')
BEGIN
    UPDATE jobs SET parked = 0
    WHERE id = (SELECT id FROM jobs
                WHERE status = 'queued' AND parked = 1 AND project = OLD.project AND stack = OLD.stack
                  AND id > OLD.id
                ORDER BY id LIMIT 1);
END;
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    step TEXT NOT NULL,
    started_at REAL NOT NULL,
    duration_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    changes TEXT NOT NULL DEFAULT '{}',
    key TEXT
);
CREATE INDEX IF NOT EXISTS steps_job ON steps (job_id, id);
CREATE TABLE IF NOT EXISTS stacks (
    project TEXT NOT NULL,
    stack TEXT NOT NULL,
    program TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    playbook TEXT NOT NULL,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_activity_at REAL NOT NULL,
    last_operation TEXT NOT NULL,
    outputs TEXT,
    export_path TEXT,
    idle_ttl REAL,
    max_age REAL,
    PRIMARY KEY (project, stack)
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    last_event_at REAL NOT NULL,
    resolved_at REAL
);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    not_before REAL NOT NULL,
    node TEXT,
    lease_expires_at REAL,
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS notes_due ON notes (status, not_before)
    WHERE status IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS notes_job ON notes (job_id, id);
CREATE TABLE IF NOT EXISTS stack_settings (
    project TEXT NOT NULL,
    stack TEXT NOT NULL,
    settings TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (project, stack)
);
"""

# Version 0 kept each delivery's body in its own row: an Alertmanager notification was stored once per
# alert. Bodies move to `payloads`, one row per distinct body, the way SQLite documents for a change
# a plain ALTER TABLE cannot make (new table, copy, drop, rename; foreign keys off meanwhile).
_FROM_V0 = (
    "CREATE TABLE payloads (digest TEXT PRIMARY KEY, body BLOB NOT NULL)",
    "INSERT OR IGNORE INTO payloads (digest, body) SELECT sha256(body), body FROM deliveries",
    "CREATE TABLE deliveries_v1 (id TEXT PRIMARY KEY, source TEXT NOT NULL, event_id TEXT NOT NULL,"
    " event_type TEXT NOT NULL, incident_id TEXT NOT NULL, status TEXT NOT NULL,"
    " payload TEXT NOT NULL REFERENCES payloads (digest), received_at REAL NOT NULL, dedupe_key TEXT)",
    "INSERT INTO deliveries_v1 (id, source, event_id, event_type, incident_id, status, payload,"
    " received_at) SELECT id, source, event_id, event_type, incident_id, status, sha256(body),"
    " received_at FROM deliveries",
    "DROP TABLE deliveries",
    "ALTER TABLE deliveries_v1 RENAME TO deliveries",
    "PRAGMA user_version = 1",  # in the same transaction: a crash leaves version 0 intact
)

# Version 1 had no leases: a job's node, lease and fence are new columns (the settings table is new,
# made with the others). A job left running keeps no lease, and is taken over at the next start.
_FROM_V1 = (
    "ALTER TABLE jobs ADD COLUMN node TEXT",
    "ALTER TABLE jobs ADD COLUMN lease_expires_at REAL",
    "ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",
    "PRAGMA user_version = 2",
)


# Version 2 had no notes: the table is new, made with the others; nothing else changes.
_FROM_V2 = ("PRAGMA user_version = 3",)

# Version 3 had no claim tokens (`NextClaim`): a new column, empty for the jobs already there.
_FROM_V3 = (
    "ALTER TABLE jobs ADD COLUMN claim_token TEXT",
    "PRAGMA user_version = 4",
)


# Version 4 had no parked jobs nor step keys: new columns, none parked (the claim's walk then tests
# them all, as before, until they have run) and no key (a step without one is never a repeat).
_FROM_V4 = (
    "ALTER TABLE jobs ADD COLUMN parked INTEGER NOT NULL DEFAULT 0",
    lambda db: _add_column(db, "steps", "key TEXT"),
    "PRAGMA user_version = 5",
)


def payload_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the tables, upgrading a store of an earlier version first, one version at a time.
    `db` is in autocommit mode."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > VERSION:
        raise sqlite3.DatabaseError(
            f"the store has schema version {version}; this responder knows up to {VERSION}"
        )
    has_deliveries = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
    ).fetchone()
    if has_deliveries and version < VERSION:  # a new file's tables are made as they are now
        db.create_function("sha256", 1, payload_digest, deterministic=True)
        _upgrade(db, 0, _FROM_V0)
        _upgrade(db, 1, _FROM_V1)
        _upgrade(db, 2, _FROM_V2)
        _upgrade(db, 3, _FROM_V3)
        _upgrade(db, 4, _FROM_V4)
    db.executescript(SCHEMA)
    db.execute(f"PRAGMA user_version = {VERSION}")


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    """A column added to a table the store has; one it lacks is made with the others, whole."""
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    if db.execute(exists, (table,)).fetchone():
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


Statement = str | Callable[[sqlite3.Connection], None]


def _upgrade(db: sqlite3.Connection, version: int, statements: tuple[Statement, ...]) -> None:
    """Upgrade a store of `version` in one transaction (a crash leaves that version intact). The
    version is read again under the write lock: another process opening the file may have done it."""
    db.execute("PRAGMA foreign_keys=OFF")  # has no effect inside a transaction
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] == version:
                for statement in statements:
                    if callable(statement):
                        statement(db)
                    else:
                        db.execute(statement)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.execute("PRAGMA foreign_keys=ON")
