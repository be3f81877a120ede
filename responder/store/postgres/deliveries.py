"""The SQL of recording deliveries: dedupe, incident state, jobs (with coalescing and `cancel_on`)."""

# Each function runs inside the caller's transaction; the rules of incident state are
# `responder.incidents`': this module asks them and persists the answer. Concurrent callers, on this
# node or another, are serialised by transaction-scoped advisory locks on what they would dedupe
# against (delivery id, source and event id, dedupe key, incident), taken in one sorted batch first
# so that two requests never wait on each other in opposite orders.

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from responder import incidents
from responder.events import event_to_dict
from responder.store import (
    DeliveryStatus,
    IncidentStatus,
    JobStatus,
    NewDelivery,
    NewJob,
    RecordedDelivery,
    RecordRejected,
)
from responder.store.postgres.connection import Conflict
from responder.store.postgres.driver import Db
from responder.store.rows import json_text

Request = Sequence[tuple[NewDelivery, list[NewJob]]]

# A value the server refuses (bad encoding, out of range, an index entry too large) fails its
# request alone, not its whole group commit with the store reported unavailable.
REJECTIONS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)

# What a delivery is judged on, read after its locks are held: the earlier delivery it repeats
# (the most specific reason first), and its incident's status.
READ = """
SELECT (
    (SELECT id FROM deliveries WHERE id = $1)
    UNION ALL (SELECT id FROM deliveries WHERE source = $2 AND event_id = $3 LIMIT 1)
    UNION ALL (SELECT id FROM deliveries WHERE $4 <> '' AND dedupe_key = $4 AND received_at > $5 LIMIT 1)
    LIMIT 1
) AS earlier, (SELECT status FROM incidents WHERE id = $6) AS incident_status
"""

# Everything a new delivery writes, in one statement (one round trip): the incident's record and
# the scheduled jobs it cancels (when the delivery is news of it), the body, the delivery, its jobs.
# The parts share one snapshot, so the cancel and the dedupe reset never see this statement's own
# rows, as when they ran before the inserts. A queued job whose stack runs a job is parked behind
# it (migration 0011; a scheduled one joins the queue later, when that job may be long gone): see
# `unpark_if_ended` for a job that ends before this commit.
WRITE = """
WITH reset AS (
    UPDATE deliveries SET dedupe_key = NULL
    WHERE $17 AND incident_id = $5 AND dedupe_key IS NOT NULL
), noted AS (
    INSERT INTO incidents (id, status, last_event_at, resolved_at)
    SELECT $5, $15, $8, $16 WHERE $14 AND $15::text IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, last_event_at = excluded.last_event_at,
        resolved_at = CASE WHEN excluded.status = 'resolved'
            THEN COALESCE(incidents.resolved_at, excluded.resolved_at) ELSE NULL END
), touched AS (
    UPDATE incidents SET last_event_at = $8 WHERE $14 AND $15::text IS NULL AND id = $5
), cancelled AS (
    UPDATE jobs SET status = 'cancelled', finished_at = $8,
        error = 'cancelled by ' || $4 || ' (delivery ' || $1 || ')'
    WHERE $14 AND status = 'scheduled' AND incident_id = $5 AND $4 = ANY (cancel_on)
    RETURNING playbook
), body AS (
    INSERT INTO payloads (digest, body) SELECT $7, $18 WHERE $18::bytea IS NOT NULL
    ON CONFLICT DO NOTHING
), delivery AS (
    INSERT INTO deliveries (id, source, event_id, event_type, incident_id, status, payload,
        received_at, dedupe_key)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT DO NOTHING RETURNING id
), busy AS MATERIALIZED (
    -- Materialized: read once for the delivery's stacks. Inlined into the INSERT (a CTE used once
    -- is), it cost the intake with jobs a quarter of its throughput (bench/RESULTS.md).
    SELECT r.project, r.stack FROM jobs AS r
    WHERE r.status = 'running' AND (r.project, r.stack) IN (SELECT * FROM unnest($11::text[], $12::text[]))
), created AS (
    INSERT INTO jobs (delivery_id, playbook, project, stack, event, incident_id, event_type,
        status, max_attempts, coalesce, params, created_at, not_before, cancel_on, parked)
    SELECT d.id, j.playbook, j.project, j.stack, j.event, $5, $4, j.status, j.max_attempts,
        j.coalesce, j.params, $8, j.not_before, j.cancel_on::text[],
        j.status = 'queued'
            AND EXISTS (SELECT 1 FROM busy WHERE busy.project = j.project AND busy.stack = j.stack)
    FROM delivery AS d, unnest($10::text[], $11::text[], $12::text[], $13::text[], $19::text[],
        $20::int[], $21::bool[], $22::text[], $23::float8[], $24::text[])
        WITH ORDINALITY AS j (playbook, project, stack, event, status, max_attempts, coalesce,
            params, not_before, cancel_on, n)
    ORDER BY j.n
    RETURNING id, parked
)
SELECT (SELECT id FROM delivery) AS inserted, ARRAY(SELECT id FROM created ORDER BY id) AS job_ids,
    ARRAY(SELECT id FROM created WHERE parked ORDER BY id) AS parked,
    ARRAY(SELECT playbook FROM cancelled) AS cancelled
"""


async def record_requests(
    db: Db, requests: Sequence[Request], parked: list[int] | None = None
) -> list[list[RecordedDelivery]]:
    """Store the requests' deliveries and their jobs, in order (the caller's transaction: all or
    none). The locks of all of them are taken first, in one statement; then the deliveries are
    read and written a wave at a time (see `waves`). Text the store refuses outright was refused
    before (`Intake.record_deliveries`); what the server refuses here fails the whole call. The
    ids of the jobs parked are added to `parked`."""
    items = [
        _Item(n, delivery, jobs, frozenset(lock_keys([(delivery, jobs)])))
        for n, request in enumerate(requests)
        for delivery, jobs in request
    ]
    # unnest keeps the array's order, so the locks are taken in the sorted order given.
    keys = sorted(frozenset().union(*(item.keys for item in items)))
    await db.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", keys)
    # The deliveries of one request share one body: the first of them to be written stores it.
    digests: list[dict[bytes, str]] = [{} for _ in requests]
    recorded: list[list[RecordedDelivery]] = [[] for _ in requests]
    try:
        for wave in waves(items):
            reads = await db.fetchmany(READ, [_read_args(item.delivery) for item in wave])
            verdicts = [
                _judge(item.delivery, item.jobs, read, digests[item.request])
                for item, read in zip(wave, reads, strict=True)
            ]
            writes = [verdict for verdict in verdicts if isinstance(verdict, _Write)]
            rows = iter(await db.fetchmany(WRITE, [w.args for w in writes]) if writes else [])
            for item, verdict in zip(wave, verdicts, strict=True):
                if isinstance(verdict, _Write):
                    row = next(rows)
                    if parked is not None:
                        parked += row["parked"]
                    verdict = await _written(db, verdict, row)
                recorded[item.request].append(verdict)
    except asyncpg.ForeignKeyViolationError as e:
        # The body this delivery shares with an earlier one was pruned meanwhile: run again.
        raise Conflict(str(e)) from e
    except REJECTIONS as e:
        raise RecordRejected(
            f"the store refused the delivery ({type(e).__name__}: {str(e)[:200]})"
        ) from e
    return recorded


class _Item(NamedTuple):
    """A delivery of a commit, with its jobs, its request's index and its `lock_keys`."""

    request: int
    delivery: NewDelivery
    jobs: list[NewJob]
    keys: frozenset[int]


def waves(items: Sequence[_Item]) -> list[list[_Item]]:
    """The deliveries in runs none two of which share a lock key (`lock_keys`: the same delivery
    id, event, dedupe key or incident). A wave's reads go to the server together, then its writes
    (one round trip each, pipelined), and each delivery is still judged as if those before it had
    been written one by one, with one exception: a resolve clears its incident's content-dedupe
    keys, which a later delivery of another incident in its wave may carry (Events v2 triggers of
    one body without a dedup_key). That delivery is judged as if it had come first, an order just as
    true of two requests that arrived together (each source's request carries one such event).
    Measured under wrk (bench/RESULTS.md): two round trips a delivery had become a third of the
    intake's cost on PostgreSQL."""
    found: list[list[_Item]] = []
    taken: set[int] = set()
    for item in items:
        if not found or item.keys & taken:
            found.append([])
            taken = set()
        found[-1].append(item)
        taken |= item.keys
    return found


def lock_keys(request: Request) -> list[int]:
    """The advisory lock keys of everything the request's deliveries are deduped or judged by."""
    names = set()
    for d, _ in request:
        names |= {f"delivery\0{d.id}", f"event\0{d.source}\0{d.event_id}"}
        if d.incident_id:
            names.add(f"incident\0{d.incident_id}")
        if d.dedupe_key:
            names.add(f"dedupe\0{d.dedupe_key}")
    return sorted(_key(name) for name in names)


def _key(name: str) -> int:
    # 64 bits of a hash: a collision only makes two unrelated requests take turns.
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)


# Run once the recording of parked jobs `$1` committed: a running job that ended meanwhile found
# none of them to unpark (they were not committed yet). Its end under way is waited for (its row,
# FOR SHARE, in the order a lease renewal locks running jobs), then the jobs whose stack runs
# nothing are unparked, in a statement whose snapshot sees that end.
WAIT_FOR_ENDS = """
SELECT 1 FROM jobs AS r
WHERE r.status = 'running' AND (r.project, r.stack) IN (SELECT project, stack FROM jobs WHERE id = ANY ($1))
ORDER BY r.project, r.stack
FOR SHARE OF r
"""
UNPARK_IF_ENDED = """
UPDATE jobs AS j SET parked = false
WHERE j.id = ANY ($1) AND j.status = 'queued' AND j.parked
  AND NOT EXISTS (SELECT 1 FROM jobs AS r
                  WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack)
"""


async def unpark_if_ended(db: Db, parked: list[int]) -> None:
    """The parked jobs just recorded whose stack's running job ended meanwhile, unparked (the
    caller's transaction)."""
    await db.fetch(WAIT_FOR_ENDS, parked)
    await db.execute(UNPARK_IF_ENDED, parked)


def _read_args(delivery: NewDelivery) -> tuple[object, ...]:
    return (
        delivery.id,
        delivery.source,
        delivery.event_id,
        delivery.dedupe_key,
        delivery.received_at - delivery.dedupe_window,
        delivery.incident_id,
    )


@dataclass(frozen=True)
class _Write:
    """A new delivery's WRITE: its arguments, and what its outcome is made of."""

    delivery: NewDelivery
    jobs: list[NewJob]
    status: DeliveryStatus
    args: tuple[object, ...]


def _judge(
    delivery: NewDelivery, jobs: list[NewJob], read: asyncpg.Record, digests: dict[bytes, str]
) -> RecordedDelivery | _Write:
    """A repeat's outcome, or what a new delivery writes (by `responder.incidents`' rules)."""
    if read["earlier"] is not None:
        return RecordedDelivery(
            created=False,
            job_ids=[],
            status=DeliveryStatus.DUPLICATE,
            duplicate_of=read["earlier"],
        )
    status, news, after, known = delivery.status, False, None, None
    if incidents.tracks_incident(delivery):
        known = incidents.parse_status(read["incident_status"])
        verdict = incidents.judge(delivery, known)
        status, news, after = verdict.status, verdict.news, verdict.incident_status
        if not verdict.creates_jobs:
            jobs = []
    digest = digests.get(delivery.body)
    new_body = digest is None  # the first delivery of the request with this body stores it
    if digest is None:
        digest = digests[delivery.body] = hashlib.sha256(delivery.body).hexdigest()
    now = delivery.received_at
    args = (
        delivery.id,
        delivery.source,
        delivery.event_id,
        delivery.event_type,
        delivery.incident_id,
        status.value,
        digest,
        now,
        delivery.dedupe_key or None,
        [j.playbook for j in jobs],
        [j.project for j in jobs],
        [j.stack for j in jobs],
        [json_text(event_to_dict(j.event)) for j in jobs],
        news,
        after.value if after is not None else None,
        now if after == IncidentStatus.RESOLVED else None,
        news and incidents.ends_content_dedupe(known, after),
        delivery.body if new_body else None,
        ["scheduled" if j.delay > 0 else "queued" for j in jobs],
        [j.max_attempts for j in jobs],
        [j.coalesce for j in jobs],
        [json_text(j.params) for j in jobs],
        [now + j.delay if j.delay > 0 else 0.0 for j in jobs],
        # One text[] column of arrays is not a type unnest takes: each job's list as an array literal.
        [_array_literal(j.cancel_on) for j in jobs],
    )
    return _Write(delivery, jobs, status, args)


async def _written(db: Db, write: _Write, row: asyncpg.Record) -> RecordedDelivery:
    """The outcome of a delivery's WRITE, once its coalescing jobs have superseded older runs."""
    if row["inserted"] is None:
        # Committed by another transaction after our check (the locks make this all but
        # impossible): run again, and the check sees it.
        raise Conflict(f"delivery {write.delivery.id!r} was recorded concurrently")
    ids: list[int] = list(row["job_ids"])
    ended = [(playbook, JobStatus.CANCELLED) for playbook in row["cancelled"]]
    now = write.delivery.received_at
    for job_id, job in zip(ids, write.jobs, strict=True):
        if job.coalesce:
            ended += [(p, JobStatus.COALESCED) for p in await _coalesce(db, job_id, job, now)]
    return RecordedDelivery(created=True, job_ids=ids, status=write.status, ended=tuple(ended))


# The older queued runs of a coalescing job's playbook on its stack, superseded by job $1 (by the
# partial index `jobs_coalescible`, migration 0008).
SUPERSEDE = (
    "UPDATE jobs SET status = 'coalesced', coalesced_into = $1, finished_at = $2"
    " WHERE status = 'queued' AND coalesce AND attempts = 0 AND project = $4 AND stack = $5"
    " AND playbook = $3 AND id < $1 RETURNING playbook"
)


def _array_literal(values: tuple[str, ...]) -> str:
    """A PostgreSQL array literal of strings (quoted, backslashes and quotes escaped)."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


async def _coalesce(db: Db, job_id: int, job: NewJob, now: float) -> list[str]:
    """Older queued runs of this playbook on this stack are superseded by this newer one; their
    playbooks."""
    superseded = await db.fetch(SUPERSEDE, job_id, now, job.playbook, job.project, job.stack)
    return [row["playbook"] for row in superseded]
