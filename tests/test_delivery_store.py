"""What only the SQLite store does: its encoding refusals, its committer's end, bodies stored once
(and pruned), file modes and the schema upgrade. The shared behaviour is `test_store_contract`."""

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from responder.store import (
    DeliveryStatus,
    JobStatus,
    NewDelivery,
    NewJob,
    RecordRejected,
    StepRecord,
    StoreUnavailable,
)
from responder.store.sqlite import SQLiteStore, prune
from tests.helpers import bare_event

NOW = 1_800_000_000.0


def delivery(
    id: str,
    *,
    event_id: str | None = None,
    source: str = "pagerduty",
    incident: str = "QINC",
    event_type: str = "incident.triggered",
    body: bytes = b"{}",
    received_at: float = NOW,
    dedupe_key: str = "",
    dedupe_window: float = 0.0,
) -> NewDelivery:
    return NewDelivery(
        id=id,
        source=source,
        event_id=event_id or f"evt-{id}",
        event_type=event_type,
        incident_id=incident,
        status=DeliveryStatus.ACCEPTED,
        body=body,
        received_at=received_at,
        dedupe_key=dedupe_key,
        dedupe_window=dedupe_window,
    )


def job(stack: str = "incident-QINC", **event: object) -> NewJob:
    return NewJob(
        playbook="pb", project="proj", stack=stack, event=bare_event(**event), max_attempts=3
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "data" / "responder.db")
    await store.open()
    yield store
    await store.close()


def rows(store: SQLiteStore, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as db:
        return [tuple(r) for r in db.execute(sql)]


# -- one bad delivery fails alone, and nobody waits forever --------------------------------------


async def test_a_delivery_the_store_cannot_encode_fails_alone(store: SQLiteStore) -> None:
    good = [delivery(f"good-{i}", incident=f"QG{i}") for i in range(20)]
    bad = [
        # A lone surrogate, as aiohttp makes of a non-UTF-8 byte in an unsigned header.
        (delivery("bad-\udcff", incident="QB1"), [job()]),
        # A value json.dumps cannot encode makes the jobs insert raise.
        (delivery("bad-2", incident="QB2"), [job(x=object())]),
        # An integer beyond SQLite's 64 bits makes the driver raise.
        (
            delivery("bad-3", incident="QB3"),
            [NewJob("pb", "p", "s", bare_event(), max_attempts=2**70)],
        ),
    ]
    calls = [store.record_delivery(d, [job(stack=d.incident_id)]) for d in good]
    calls[10:10] = [store.record_delivery(d, jobs) for d, jobs in bad]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    rejected = outcomes[10:13]
    accepted = outcomes[:10] + outcomes[13:]
    assert all(isinstance(o, RecordRejected) for o in rejected), rejected
    assert "delivery id" in str(rejected[0])  # the field is named
    assert all(not isinstance(o, BaseException) and o.created and o.job_ids for o in accepted)
    assert await store.delivery_ids() == {d.id for d in good}
    assert len(await store.list_jobs(limit=100)) == 20
    # The committer is still alive: the next delivery is answered too.
    again = await asyncio.wait_for(store.record_delivery(delivery("after"), []), 10)
    assert again.created


async def test_a_cancelled_committer_answers_every_waiting_caller(store: SQLiteStore) -> None:
    calls = [
        asyncio.create_task(store.record_delivery(delivery(f"c{i}", incident=f"Q{i}"), []))
        for i in range(5)
    ]
    while store._committer is None:  # the callers have queued their deliveries
        await asyncio.sleep(0)
    store._committer.cancel()  # as at loop shutdown: here before it even started
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    assert (await asyncio.wait_for(store.record_delivery(delivery("later"), []), 10)).created


# -- storage: one body per notification ---------------------------------------------------------


async def test_a_notification_body_is_stored_once_for_all_its_alerts(store: SQLiteStore) -> None:
    body = b"x" * 100_000
    alerts = [(delivery(f"alert-{i}", incident=f"QA{i}", body=body), [job()]) for i in range(300)]
    recorded = await store.record_deliveries(alerts)
    assert all(r.created and r.job_ids for r in recorded)
    assert rows(store, "SELECT COUNT(*), SUM(LENGTH(body)) FROM payloads") == [(1, 100_000)]
    assert len(await store.delivery_ids()) == 300


async def test_a_request_is_stored_whole_or_not_at_all(store: SQLiteStore) -> None:
    request = [(delivery("ok"), [job()]), (delivery("bad", incident="Q2"), [job(x=object())])]
    with pytest.raises(RecordRejected):
        await store.record_deliveries(request)
    assert await store.delivery_ids() == set()
    assert rows(store, "SELECT COUNT(*) FROM payloads") == [(0,)]


# -- retention ---------------------------------------------------------------------------------


async def test_prune_deletes_the_bodies_of_the_deliveries_it_prunes(store: SQLiteStore) -> None:
    """What prune keeps and deletes is the contract's (test_store_contract); the bodies are SQLite's."""
    old, cutoff = NOW, NOW + 1000
    for name in ("done", "queued"):
        delivered = delivery(name, incident=f"Q-{name}", body=name.encode(), received_at=old)
        await store.record_delivery(delivered, [job(stack=name)])
    await store.record_delivery(delivery("ping", incident="", body=b"ping", received_at=old), [])
    claimed = await store.claim_next(old)
    assert claimed is not None
    await store.finish(claimed.id, JobStatus.SUCCEEDED, old)
    counts = await store.prune(cutoff)
    assert (counts["deliveries"], counts["payloads"]) == (2, 2)  # "done" and the ping
    assert rows(store, "SELECT body FROM payloads") == [(b"queued",)]
    assert await store.prune(cutoff) == dict.fromkeys(counts, 0)


# -- file modes and upgrade ----------------------------------------------------------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
async def test_database_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "responder.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.record_delivery(delivery("d1"), [job()])
        files = [path, path.with_name("responder.db-wal"), path.with_name("responder.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
            f.name: 0o600 for f in files
        }
    finally:
        await store.close()


async def test_a_version_0_store_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "responder.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE deliveries (id TEXT PRIMARY KEY, source TEXT NOT NULL,
                event_id TEXT NOT NULL, event_type TEXT NOT NULL, incident_id TEXT NOT NULL,
                status TEXT NOT NULL, body BLOB NOT NULL, received_at REAL NOT NULL);
            CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT,
                delivery_id TEXT NOT NULL REFERENCES deliveries (id), playbook TEXT NOT NULL,
                project TEXT NOT NULL, stack TEXT NOT NULL, event TEXT NOT NULL,
                incident_id TEXT NOT NULL, event_type TEXT NOT NULL, status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
                not_before REAL NOT NULL DEFAULT 0, coalesce INTEGER NOT NULL DEFAULT 0,
                coalesced_into INTEGER, cancel_on TEXT NOT NULL DEFAULT '[]',
                cancel_requested INTEGER NOT NULL DEFAULT 0, plan TEXT, approved_plan TEXT,
                params TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, started_at REAL,
                finished_at REAL, error TEXT, outputs TEXT);
            INSERT INTO deliveries VALUES ('a1', 'alertmanager', 'a1', 'incident.triggered', 'Q1',
                'accepted', x'7b7d', 1.0);
            INSERT INTO deliveries VALUES ('a2', 'alertmanager', 'a2', 'incident.triggered', 'Q2',
                'accepted', x'7b7d', 1.0);
            INSERT INTO jobs (delivery_id, playbook, project, stack, event, incident_id,
                event_type, status, max_attempts, created_at)
                VALUES ('a1', 'pb', 'proj', 's', '{"id": "a1", "source": "alertmanager",
                    "type": "incident.triggered", "resource_type": "incident"}',
                    'Q1', 'incident.triggered', 'queued', 3, 1.0);
            """
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.delivery_ids() == {"a1", "a2"}
        assert [j.delivery_id for j in await store.list_jobs()] == ["a1"]
        assert rows(store, "SELECT body FROM payloads") == [(b"{}",)]
        assert rows(store, "PRAGMA user_version") == [(5,)]
        assert rows(store, "PRAGMA foreign_key_check") == []
        assert not (await store.record_delivery(delivery("a1"), [])).created
        assert (await store.record_delivery(delivery("new", incident="Q3"), [job()])).created
    finally:
        await store.close()


async def test_a_group_commit_s_savepoint_journals_stay_in_memory(store: SQLiteStore) -> None:
    """Each delivery of a batch has its own savepoint; past 64 KiB SQLite would move their journal
    to a temporary file per batch (≈ 45 µs of CPU a delivery) unless temporary storage is memory."""
    assert await store._run(lambda db: db.execute("PRAGMA temp_store").fetchone()[0]) == 2
    batch = [
        store.record_delivery(delivery(f"b{i}", incident=f"QB{i}"), [job()]) for i in range(16)
    ]
    assert all(recorded.created for recorded in await asyncio.gather(*batch))


async def test_a_prune_deletes_batch_by_batch_each_in_its_own_transaction(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deliveries commit between a long prune's batches, and what one transaction holds in memory
    stays small (its page journal: temporary storage is memory)."""
    monkeypatch.setattr(prune, "BATCH", 2)
    old = [
        store.record_delivery(
            delivery(f"o{i}", incident=f"QO{i}", body=f"{{{i}}}".encode()), [job(f"s{i}")]
        )
        for i in range(5)
    ]
    ids = [r.job_ids[0] for r in await asyncio.gather(*old)]
    for job_id in ids:
        claimed = await store.claim_next(NOW)
        assert claimed is not None and claimed.id == job_id
        await store.add_step(job_id, StepRecord("up", NOW, 1.0, "succeeded"))
        await store.finish(job_id, JobStatus.SUCCEEDED, NOW)
    kept = await store.record_delivery(
        delivery("new", incident="QNEW", received_at=NOW + 10), [job("s9")]
    )
    transactions = 0
    write = store._write

    async def counted(fn: Any, *, slow: bool = False) -> Any:
        nonlocal transactions
        transactions += 1
        return await write(fn, slow=slow)

    monkeypatch.setattr(store, "_write", counted)
    counts = await store.prune(NOW + 5)
    assert counts == {
        "notes": 0,
        "steps": 5,
        "jobs": 5,
        "deliveries": 5,
        "payloads": 5,
        "stacks": 0,
        "incidents": 0,
    }
    assert transactions == 3 + 3 + 3 + 1  # 5 jobs, 5 deliveries, 5 bodies by 2; then the records
    assert [j.id for j in await store.list_jobs()] == kept.job_ids
    assert rows(store, "SELECT id FROM deliveries") == [("new",)]
    assert rows(store, "SELECT count(*) FROM payloads") == [(1,)]
    assert await store.prune(NOW + 5) == dict.fromkeys(counts, 0)


async def test_a_prune_keeps_a_body_a_new_delivery_took_between_its_batches(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch's delete restates why its rows may go: a body found unused, then stored again by
    a delivery committed before its batch, stays (deleting it would leave the delivery dangling)."""
    [job_id] = (await store.record_delivery(delivery("old", body=b"{1}"), [job()])).job_ids
    assert (await store.claim_next(NOW)) is not None
    await store.finish(job_id, JobStatus.SUCCEEDED, NOW)
    write = store._write

    async def racing(fn: Any, *, slow: bool = False) -> Any:
        if getattr(fn, "func", None) is prune.delete_payloads:
            again = delivery("again", incident="QAGAIN", body=b"{1}", received_at=NOW + 10)
            await store.record_delivery(again, [])
        return await write(fn, slow=slow)

    monkeypatch.setattr(store, "_write", racing)
    counts = await store.prune(NOW + 5)
    assert (counts["jobs"], counts["deliveries"], counts["payloads"]) == (1, 1, 0)
    assert rows(store, "SELECT id FROM deliveries") == [("again",)]
    assert rows(store, "SELECT count(*) FROM payloads") == [(1,)]
    assert rows(store, "PRAGMA foreign_key_check") == []


@pytest.mark.parametrize("statement", ["CLAIM", "CLAIMED_BEFORE", "NEXT_DUE"])
async def test_the_runner_s_queue_statements_never_scan_the_jobs_table(
    store: SQLiteStore, statement: str
) -> None:
    """They run on every claim and every idle worker's wait, behind the intake's commits on the
    store's one thread: a full scan there costs every caller (17 ms at 13,000 queued jobs)."""
    from responder.store.sqlite import queue

    sql = getattr(queue, statement)
    params: Any = ("n", "token") if statement == "CLAIMED_BEFORE" else ()
    if ":now" in sql:
        params = {"now": NOW, "node": "n", "expires": NOW + 30, "token": None}
    plan = await store._run(lambda db: db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
    details = [row[3] for row in plan]
    # The claim's walk is of `jobs_ready`, the index of the queued jobs not parked, in their order.
    walk = "SCAN j USING INDEX jobs_ready"
    assert not [d for d in details if d.startswith("SCAN") and d != walk], details
    if statement == "CLAIM":
        assert walk in details, details
    if statement == "NEXT_DUE":
        assert any("jobs_due" in d for d in details), details
