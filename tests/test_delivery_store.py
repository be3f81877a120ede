"""The SQLite store's delivery boundary: group-commit isolation, dedupe, storage, retention, modes."""

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from responder.store import (
    Caps,
    DeliveryStatus,
    JobStatus,
    NewDelivery,
    NewJob,
    RecordRejected,
    StackRecord,
    StackStatus,
    StepRecord,
    StoreUnavailable,
)
from responder.store import deliveries as delivery_sql
from responder.store.sqlite import SQLiteStore
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


async def test_an_unexpected_commit_error_reaches_every_caller(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Bug(Exception):
        """Not a store error: it must reach the callers as it is."""

    def broken(db: sqlite3.Connection, requests: object) -> object:
        raise Bug("a bug in the recording code")

    monkeypatch.setattr(delivery_sql, "record_requests", broken)
    calls = [store.record_delivery(delivery(f"d{i}", incident=f"Q{i}"), []) for i in range(5)]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(o, Bug) for o in outcomes), outcomes
    monkeypatch.undo()
    assert (await asyncio.wait_for(store.record_delivery(delivery("later"), []), 10)).created


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


# -- dedupe ------------------------------------------------------------------------------------


async def test_the_same_event_under_a_new_delivery_id_is_a_redelivery(store: SQLiteStore) -> None:
    first = await store.record_delivery(delivery("wh-1", event_id="E1"), [job()])
    replay = await store.record_delivery(delivery("wh-2", event_id="E1"), [job()])
    other_source = await store.record_delivery(
        delivery("am-1", event_id="E1", source="alertmanager", incident="QAM"), [job()]
    )
    assert first.created and not replay.created and replay.duplicate_of == "wh-1"
    assert other_source.created  # event ids are only unique within a source
    assert len(await store.list_jobs()) == 2


async def test_content_dedupe_holds_only_within_its_window(store: SQLiteStore) -> None:
    def ev2(id: str, at: float, event_type: str = "incident.triggered") -> NewDelivery:
        return delivery(
            id, event_type=event_type, received_at=at, dedupe_key="body-1", dedupe_window=300
        )

    assert (await store.record_delivery(ev2("a", NOW), [job()])).created
    assert not (await store.record_delivery(ev2("b", NOW + 299), [job()])).created
    later = await store.record_delivery(ev2("c", NOW + 301), [job()])
    # Past the window it is a new delivery; the incident is still open, so no new job.
    assert later.created and later.status == "deduplicated" and later.job_ids == []


async def test_a_change_of_incident_state_ends_content_dedupe(store: SQLiteStore) -> None:
    def ev2(id: str, event_type: str, key: str) -> NewDelivery:
        return delivery(
            id, event_type=event_type, received_at=NOW, dedupe_key=key, dedupe_window=300
        )

    assert (await store.record_delivery(ev2("t1", "incident.triggered", "T"), [job()])).job_ids
    assert (await store.record_delivery(ev2("r1", "incident.resolved", "R"), [job()])).job_ids
    # The very same trigger body, re-fired after the resolve (same clock: not the window's doing).
    refire = await store.record_delivery(ev2("t2", "incident.triggered", "T"), [job()])
    assert refire.created and refire.job_ids
    assert not (await store.record_delivery(ev2("t3", "incident.triggered", "T"), [job()])).created


async def test_concurrent_repeats_create_one_delivery(store: SQLiteStore) -> None:
    calls = [
        store.record_delivery(delivery(f"r{i}", dedupe_key="same-body", dedupe_window=300), [job()])
        for i in range(10)
    ]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert sum(o.created for o in outcomes) == 1
    assert len(await store.list_jobs()) == 1


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


async def test_prune_deletes_only_what_finished_before_the_cutoff(store: SQLiteStore) -> None:
    old, cutoff, recent = NOW, NOW + 1000, NOW + 2000
    ids = {}
    for name in ("done", "running", "waiting", "late", "queued"):
        recorded = await store.record_delivery(
            delivery(name, incident=f"Q-{name}", body=name.encode(), received_at=old),
            [job(stack=name)],
        )
        ids[name] = recorded.job_ids[0]
    await store.record_delivery(delivery("ping", incident="", received_at=old), [])
    for name in ("done", "running", "waiting", "late"):  # claimed in arrival order
        claimed = await store.claim_next(old)
        assert claimed is not None and claimed.id == ids[name]
    await store.add_step(ids["done"], StepRecord("up", old, 1.0, "succeeded"))
    await store.finish(ids["done"], JobStatus.SUCCEEDED, old)
    await store.finish(ids["late"], JobStatus.FAILED, recent)  # finished after the cutoff
    await store.await_approval(ids["waiting"], {"changes": {}}, old)
    counts = await store.prune(cutoff)
    assert counts["jobs"] == 1 and counts["steps"] == 1
    assert counts["deliveries"] == 2 and counts["payloads"] == 2  # "done" and the ping
    remaining = {j.id for j in await store.list_jobs(limit=100)}
    assert remaining == {ids[n] for n in ("queued", "running", "waiting", "late")}
    assert await store.delivery_ids() == {"queued", "running", "waiting", "late"}
    assert rows(store, "SELECT COUNT(*) FROM payloads") == [(4,)]
    assert await store.prune(cutoff) == dict.fromkeys(counts, 0)


async def test_prune_forgets_destroyed_stacks_and_resolved_incidents(store: SQLiteStore) -> None:
    record = StackRecord(
        "proj", "gone", "prog", "QGONE", "pb", "svc", StackStatus.PROVISIONING, NOW, NOW, ""
    )
    assert await store.reserve_stack(record, Caps()) is None
    await store.touch_stack(
        "proj", "gone", operation="destroy", now=NOW, status=StackStatus.DESTROYED
    )
    await store.record_delivery(
        delivery("res", incident="QGONE", event_type="incident.resolved"), []
    )
    counts = await store.prune(NOW + 1)
    assert counts["stacks"] == 1 and counts["incidents"] == 1 and counts["deliveries"] == 1
    assert await store.incident("QGONE") is None


# -- stacks whose first `up` failed --------------------------------------------------------------


async def test_failed_stacks_hold_no_cap_slot_and_are_reused(store: SQLiteStore) -> None:
    def record(stack: str) -> StackRecord:
        return StackRecord(
            "proj", stack, "prog", f"Q{stack}", "pb", "svc", StackStatus.PROVISIONING, NOW, NOW, ""
        )

    caps = Caps(live_stacks=1, per_service=1, per_playbook=1)
    assert await store.reserve_stack(record("a"), caps) is None
    assert await store.reserve_stack(record("b"), caps) == "max_live_stacks=1"
    await store.touch_stack("proj", "a", operation="up", now=NOW, status=StackStatus.FAILED)
    assert await store.reserve_stack(record("b"), caps) is None
    await store.touch_stack("proj", "b", operation="destroy", now=NOW, status=StackStatus.DESTROYED)
    # A new reservation for the failed stack takes its record over.
    assert await store.reserve_stack(record("a"), caps) is None
    again = await store.get_stack("proj", "a")
    assert again is not None and again.status == "provisioning"


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
        assert rows(store, "PRAGMA user_version") == [(1,)]
        assert rows(store, "PRAGMA foreign_key_check") == []
        assert not (await store.record_delivery(delivery("a1"), [])).created
        assert (await store.record_delivery(delivery("new", incident="Q3"), [job()])).created
    finally:
        await store.close()
