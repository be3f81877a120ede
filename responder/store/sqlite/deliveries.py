"""The SQL of recording deliveries: dedupe, incident state, jobs (with coalescing and `cancel_on`).

Each function runs inside the caller's transaction on the store's connection; the rules of incident
state are `responder.incidents`': this module asks them and persists the answer.
"""

import sqlite3
from collections.abc import Sequence

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
from responder.store.group_commit import Outcome
from responder.store.limits import refuse_unstorable
from responder.store.rows import json_text
from responder.store.sqlite.schema import payload_digest

Request = Sequence[tuple[NewDelivery, list[NewJob]]]

# What a delivery is judged on, in one statement: the earlier delivery it repeats (same id; same
# source and event id, as a PagerDuty event replayed under a new X-Webhook-Id; same dedupe key
# within its window), the most specific reason first, and its incident's status.
READ = """
SELECT COALESCE(
    (SELECT id FROM deliveries WHERE id = ?1),
    (SELECT id FROM deliveries WHERE source = ?2 AND event_id = ?3 LIMIT 1),
    (SELECT id FROM deliveries WHERE ?4 <> '' AND dedupe_key = ?4 AND received_at > ?5 LIMIT 1)
), (SELECT status FROM incidents WHERE id = ?6)
"""

# A value of one request that the store cannot encode fails that request alone. Anything else
# (the disk, a lock, a bug) fails the whole commit and reaches every waiting caller.
REJECTIONS = (ValueError, TypeError, OverflowError, sqlite3.IntegrityError, sqlite3.DataError)


def record_requests(db: sqlite3.Connection, requests: Sequence[Request]) -> list[Outcome]:
    """Record each request's deliveries under its own savepoint: a rejected request is rolled back
    and reported, the others stay in the transaction."""
    outcomes: list[Outcome] = []
    for request in requests:
        # The deliveries of one notification share one body object: hashed and stored once. Per
        # request, since a rejected request takes its stored bodies with it.
        digests: dict[bytes, str] = {}
        db.execute("SAVEPOINT request")
        try:
            outcomes.append([record(db, d, jobs, digests) for d, jobs in request])
        except REJECTIONS as e:
            db.execute("ROLLBACK TO request")
            outcomes.append(e if isinstance(e, RecordRejected) else RecordRejected(_reason(e)))
        db.execute("RELEASE request")
    return outcomes


def _reason(error: Exception) -> str:
    text = str(error)
    return f"the store refused the delivery ({type(error).__name__}: {text[:200]})"


def record(
    db: sqlite3.Connection,
    delivery: NewDelivery,
    jobs: list[NewJob],
    digests: dict[bytes, str],
) -> RecordedDelivery:
    """Store one delivery and its jobs, unless it repeats an earlier delivery; `digests` caches
    the body digests of the request."""
    refuse_unstorable(delivery, jobs, nul=False)  # SQLite's text may hold a NUL
    earlier, incident_status = db.execute(
        READ,
        (
            delivery.id,
            delivery.source,
            delivery.event_id,
            delivery.dedupe_key,
            delivery.received_at - delivery.dedupe_window,
            delivery.incident_id,
        ),
    ).fetchone()
    if earlier is not None:
        return RecordedDelivery(
            created=False, job_ids=[], status=DeliveryStatus.DUPLICATE, duplicate_of=earlier
        )
    status = delivery.status
    cancelled: list[str] = []
    if incidents.tracks_incident(delivery):
        known = incidents.parse_status(incident_status)
        verdict = incidents.judge(delivery, known)
        status = verdict.status
        if not verdict.creates_jobs:
            jobs = []
        if verdict.news:
            _note_incident(db, delivery, known, verdict.incident_status)
            cancelled = _cancel_scheduled(db, delivery)
    digest = digests.get(delivery.body)
    if digest is None:
        digest = digests[delivery.body] = payload_digest(delivery.body)
        db.execute(
            "INSERT INTO payloads (digest, body) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (digest, delivery.body),
        )
    db.execute(
        "INSERT INTO deliveries (id, source, event_id, event_type, incident_id, status, payload,"
        " received_at, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            delivery.id,
            delivery.source,
            delivery.event_id,
            delivery.event_type,
            delivery.incident_id,
            status,
            digest,
            delivery.received_at,
            delivery.dedupe_key or None,
        ),
    )
    ids, coalesced = _insert_jobs(db, delivery, jobs)
    ended = [(p, JobStatus.CANCELLED) for p in cancelled] + [
        (p, JobStatus.COALESCED) for p in coalesced
    ]
    return RecordedDelivery(created=True, job_ids=ids, status=status, ended=tuple(ended))


def _note_incident(
    db: sqlite3.Connection,
    delivery: NewDelivery,
    known: IncidentStatus | None,
    status: IncidentStatus | None,
) -> None:
    if status is None:
        db.execute(
            "UPDATE incidents SET last_event_at = ? WHERE id = ?",
            (delivery.received_at, delivery.incident_id),
        )
        return
    if incidents.ends_content_dedupe(known, status):
        db.execute(
            "UPDATE deliveries SET dedupe_key = NULL WHERE incident_id = ? AND dedupe_key IS NOT NULL",
            (delivery.incident_id,),
        )
    resolved_at = delivery.received_at if status == IncidentStatus.RESOLVED else None
    db.execute(
        "INSERT INTO incidents (id, status, last_event_at, resolved_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, last_event_at = excluded.last_event_at,"
        " resolved_at = CASE WHEN excluded.status = 'resolved'"
        "   THEN COALESCE(incidents.resolved_at, excluded.resolved_at) ELSE NULL END",
        (delivery.incident_id, status, delivery.received_at, resolved_at),
    )


def _cancel_scheduled(db: sqlite3.Connection, delivery: NewDelivery) -> list[str]:
    """An event of a type a scheduled job lists cancels it, for the same incident (a reopen inside
    the grace period keeps the stack). The cancelled jobs' playbooks."""
    cursor = db.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = ?"
        " WHERE status = 'scheduled' AND incident_id = ?"
        " AND EXISTS (SELECT 1 FROM json_each(jobs.cancel_on) WHERE value = ?)"
        " RETURNING playbook",
        (
            delivery.received_at,
            f"cancelled by {delivery.event_type} (delivery {delivery.id})",
            delivery.incident_id,
            delivery.event_type,
        ),
    )
    return [row[0] for row in cursor.fetchall()]


# A queued job recorded while its stack runs a job is parked behind it (see the schema's
# `jobs_ready`); a scheduled one joins the queue later, when that job may be long gone.
PARKED = "? AND EXISTS (SELECT 1 FROM jobs WHERE status = 'running' AND project = ? AND stack = ?)"


def _insert_jobs(
    db: sqlite3.Connection, delivery: NewDelivery, jobs: list[NewJob]
) -> tuple[list[int], list[str]]:
    """The new jobs' ids, and the playbooks of the older runs they coalesced."""
    now = delivery.received_at
    ids: list[int] = []
    coalesced: list[str] = []
    for job in jobs:
        cursor = db.execute(
            "INSERT INTO jobs (delivery_id, playbook, project, stack, event, incident_id, event_type,"
            " status, max_attempts, coalesce, params, created_at, not_before, cancel_on, parked)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {PARKED})",
            (
                delivery.id,
                job.playbook,
                job.project,
                job.stack,
                json_text(event_to_dict(job.event)),
                delivery.incident_id,
                delivery.event_type,
                "scheduled" if job.delay > 0 else "queued",
                job.max_attempts,
                int(job.coalesce),
                json_text(job.params),
                now,
                now + job.delay if job.delay > 0 else 0,
                json_text(list(job.cancel_on)),
                job.delay <= 0,
                job.project,
                job.stack,
            ),
        )
        job_id = int(cursor.lastrowid or 0)
        if job.coalesce:
            # Older queued runs of this playbook on this stack are superseded by this newer one.
            superseded = db.execute(
                "UPDATE jobs SET status = 'coalesced', coalesced_into = ?, finished_at = ?"
                " WHERE status = 'queued' AND coalesce = 1 AND playbook = ? AND project = ? AND stack = ?"
                " AND id < ? AND attempts = 0 RETURNING playbook",
                (job_id, now, job.playbook, job.project, job.stack, job_id),
            )
            coalesced += [row[0] for row in superseded.fetchall()]
        ids.append(job_id)
    return ids, coalesced
