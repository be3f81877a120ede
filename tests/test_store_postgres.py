"""The PostgreSQL store beyond the contract: migrations, outages, what it cannot hold, its setting."""

import asyncio
import contextlib
import dataclasses
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from responder.config import ConfigError, Settings
from responder.playbook import Context, on, playbook
from responder.store import (
    JobStatus,
    NewNote,
    NextClaim,
    RecordRejected,
    StepRecord,
    StoreUnavailable,
    limits,
)
from responder.store.postgres import PostgresStore, migrations
from responder.store.postgres import deliveries as postgres_deliveries
from responder.store.postgres.deliveries import SUPERSEDE
from responder.store.postgres.queue import CLAIM as CLAIM_SQL
from responder.store.postgres.queue import NEXT_DUE as NEXT_DUE_SQL
from tests.alertmanager_server import free_port
from tests.helpers import Client, LogCapture, fixture_bytes, pd_event
from tests.postgres_server import PostgresServer
from tests.test_store_contract import NOW, delivery, enqueue, job, stall_and_unpark

PASSWORD = "pw-never-shown-4f1d9a"
T = TypeVar("T")


async def schema_rows(url: str) -> list[tuple[int, str, str]]:
    db = await asyncpg.connect(url)
    try:
        found = await db.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
    finally:
        await db.close()
    return [(r["version"], r["name"], r["checksum"]) for r in found]


async def test_first_opens_racing_on_an_empty_database_migrate_it_once(postgres_url: str) -> None:
    """Nodes starting together on a new database: one applies each migration, once, and records it;
    a later open applies nothing."""
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    await asyncio.wait_for(asyncio.gather(*(s.open() for s in stores)), 30)
    for store in stores:
        await store.close()
    shipped = [(m.version, m.name, m.checksum) for m in migrations.available()]
    assert shipped and await schema_rows(postgres_url) == shipped
    db = await asyncpg.connect(postgres_url)
    try:
        assert await migrations.migrate(db, migrations.available()) == []
    finally:
        await db.close()


async def test_a_new_migration_file_is_applied_at_the_next_open(
    postgres_url: str, tmp_path: Path
) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    for path in migrations.DIRECTORY.glob("*.sql"):
        shutil.copy(path, tmp_path)
    version = len(migrations.available()) + 1
    (tmp_path / f"{version:04d}_remarks.sql").write_text("CREATE TABLE remarks (text text);")
    db = await asyncpg.connect(postgres_url)
    try:
        assert await migrations.migrate(db, migrations.available(tmp_path)) == [version]
        assert await db.fetchval("SELECT COUNT(*) FROM remarks") == 0
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("INSERT INTO schema_migrations VALUES (999, 'future', 'x')", "999"),
        ("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", "never edit"),
    ],
)
async def test_a_schema_this_responder_did_not_write_is_refused(
    postgres_url: str, change: str, message: str
) -> None:
    """A database migrated by a newer responder, or whose applied migration differs from ours."""
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    db = await asyncpg.connect(postgres_url)
    try:
        await db.execute(change)
    finally:
        await db.close()
    with pytest.raises(StoreUnavailable, match=message):
        await PostgresStore(postgres_url).open()


async def test_no_server_is_unavailable_and_the_password_is_never_shown() -> None:
    store = PostgresStore(
        f"postgresql://responder:{PASSWORD}@127.0.0.1:{free_port()}/jobs", connect_timeout=2
    )
    with pytest.raises(StoreUnavailable, match="unavailable") as error:
        await store.open()
    assert PASSWORD not in str(error.value)
    with pytest.raises(StoreUnavailable):
        await store.ping()  # closed: unavailable, not a crash


async def test_a_wrong_password_is_unavailable_without_echoing_it(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.url().replace(postgres_server.password, PASSWORD)
    with pytest.raises(StoreUnavailable, match="password authentication failed") as error:
        await PostgresStore(url).open()
    assert PASSWORD not in str(error.value)


async def test_an_outage_is_unavailable_until_the_server_is_back() -> None:
    """Calls fail as StoreUnavailable while the server is down (nothing half-stored), and the same
    store answers again once it is back: the pool reconnects."""
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    store = PostgresStore(server.url(), connect_timeout=2)
    try:
        await store.open()
        before = await store.record_delivery(delivery("QUP"), [job()])
        await asyncio.to_thread(server.pause)
        with pytest.raises(StoreUnavailable):
            await store.record_delivery(delivery("QDOWN"), [job("down")])
        with pytest.raises(StoreUnavailable):
            await store.claim_next(NOW)
        with pytest.raises(StoreUnavailable):
            await store.ping()
        await asyncio.to_thread(server.resume)
        for attempt in range(20):  # a connection the restart broke may fail one last call
            try:
                await store.ping()
                break
            except StoreUnavailable:
                assert attempt < 19
                await asyncio.sleep(0.1)
        assert [j.id for j in await store.list_jobs()] == before.job_ids
        assert await store.incident("QDOWN") is None
        after = await store.record_delivery(delivery("QBACK"), [job("back")])
        assert after.created and after.job_ids
    finally:
        await store.close()
        await asyncio.to_thread(server.stop)


async def test_a_nul_character_fails_its_delivery_alone(postgres_url: str) -> None:
    """PostgreSQL text cannot hold NUL: the delivery is refused naming the field; others commit."""
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        outcomes = await asyncio.gather(
            store.record_delivery(delivery("QNUL", id="bad\0id"), [job()]),
            store.record_delivery(delivery("QFINE"), [job()]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], RecordRejected) and "delivery id" in str(outcomes[0])
        assert not isinstance(outcomes[1], BaseException) and outcomes[1].created
        assert await store.incident("QNUL") is None
    finally:
        await store.close()


def test_the_database_url_is_logged_with_its_password_masked() -> None:
    url = f"postgresql://responder:{PASSWORD}@db.internal:5432/jobs?sslmode=require"
    settings = Settings.load({"RESPONDER_DATABASE_URL": url})
    assert settings.database_url == url
    shown = settings.public()["database_url"]
    assert shown == "postgresql://responder:[secret]@db.internal:5432/jobs?sslmode=require"
    with pytest.raises(ConfigError, match="RESPONDER_DATABASE_URL") as error:
        Settings.load({"RESPONDER_DATABASE_URL": f"mysql://responder:{PASSWORD}@db/jobs"})
    assert PASSWORD not in str(error.value)
    assert Settings.load({}).database_url == ""  # unset: SQLite in the data dir


async def test_a_daemon_with_a_database_url_keeps_its_jobs_there(
    make_client: Callable[..., Awaitable[Client]], postgres_url: str, logs: LogCapture
) -> None:
    """The setting chooses the store: a delivery's job is recorded in PostgreSQL and runs, and the
    URL's password appears in no log line."""
    ran: list[str] = []

    @playbook()
    @on("incident.triggered")
    async def record(ctx: Context) -> None:
        """Remember the incident."""
        ran.append(ctx.incident.id if ctx.incident else "")

    client = await make_client([record], database_url=postgres_url)
    assert isinstance(client.daemon.store, PostgresStore)
    response = await client.deliver(fixture_bytes("pd_v3_incident_triggered.json"), "wh-pg")
    assert response.status == 202
    jobs = await client.wait_for_jobs(timeout=30)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] and ran == ["Q1X7KD4R9PVM2T"]
    db = await asyncpg.connect(postgres_url)
    try:
        assert await db.fetchval("SELECT id FROM deliveries") == "wh-pg"
    finally:
        await db.close()
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in logs.text
    [opening] = logs.events("store.opening")
    assert "[secret]" in str(opening["url"])


async def test_a_daemon_answers_503_while_its_database_is_down(
    make_client: Callable[..., Awaitable[Client]], logs: LogCapture
) -> None:
    """PostgreSQL restarted under a running daemon: deliveries get 503 (the sender retries) and
    /readyz names the store meanwhile; afterwards the retried delivery is accepted and runs, and
    the one acknowledged before the outage was not lost."""
    ran: list[str] = []

    @playbook()
    @on("incident.triggered")
    async def record(ctx: Context) -> None:
        """Remember the incident."""
        ran.append(ctx.incident.id if ctx.incident else "")

    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        client = await make_client([record], database_url=server.url())
        assert (
            await client.deliver(pd_event("incident.triggered", "QBEFORE"), "d-1")
        ).status == 202
        await client.wait_for_jobs(timeout=30)
        await asyncio.to_thread(server.pause)
        during = await client.deliver(pd_event("incident.triggered", "QDURING"), "d-2")
        assert during.status == 503
        ready = await client.http.get("/readyz")
        assert ready.status == 503 and "unavailable" in (await ready.json())["checks"]["store"]
        await asyncio.to_thread(server.resume)
        for _ in range(50):  # the first calls may meet connections the restart broke
            retried = await client.deliver(pd_event("incident.triggered", "QDURING"), "d-2")
            if retried.status != 503:
                break
            await asyncio.sleep(0.1)
        assert retried.status == 202
        jobs = await client.wait_for_jobs(timeout=30)
        assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 2
        assert sorted(ran) == ["QBEFORE", "QDURING"]
        await client.http.close()  # the daemon stops (and closes its pool) before the server goes
        assert server.password not in logs.text
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_claim_finds_the_due_scheduled_jobs_by_index(postgres_url: str) -> None:
    """Each claim first moves the due scheduled jobs into the queue: by the `jobs_due` index, not a
    walk of every scheduled job (which made intake with delayed playbooks 3× slower)."""
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    db = await asyncpg.connect(postgres_url)
    try:
        source = await db.fetchval(
            "SELECT prosrc FROM pg_proc WHERE proname = 'claim_job' AND pronargs = 4"
        )
        start = source.index("UPDATE")
        promote = source[start : source.index(";", start)]
        assert "status = 'scheduled'" in promote
        await db.execute("SET enable_seqscan = off")  # so that an unusable index shows as such
        plan = await db.fetchval(
            "EXPLAIN (FORMAT JSON) " + promote.replace("claimed_at", "$1::double precision"), 1.0
        )
    finally:
        await db.close()
    assert "jobs_due" in plan, plan


@contextlib.asynccontextmanager
async def store_and_session(url: str) -> AsyncIterator[tuple[PostgresStore, asyncpg.Connection]]:
    """An open store, and a session of its own on which a test plans and runs the store's SQL."""
    store = PostgresStore(url)
    await store.open()
    db = await asyncpg.connect(url)
    try:
        yield store, db
    finally:
        await db.close()
        await store.close()


async def queue_backlog(store: PostgresStore, prefix: str, **options: Any) -> None:
    """1,000 queued jobs, each on a stack of its own (s0, s1, ...), recorded 250 at a time."""
    for start in range(0, 1000, 250):
        await store.record_deliveries(
            [
                (delivery(f"{prefix}{i}"), [job(f"s{i}", **options)])
                for i in range(start, start + 250)
            ]
        )


async def jobs_read_by(db: asyncpg.Connection, run: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """What `run` returns on `db`, and how many jobs it read (index fetches, in a transaction of its
    own)."""
    async with db.transaction():
        result = await run()
        read: int = await db.fetchval(
            "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
        )
    return result, read


async def test_a_node_of_the_version_before_still_claims_during_a_rolling_upgrade(
    postgres_url: str,
) -> None:
    """Migration 0009 gave the claim a token: the call without one, as the version before makes
    it, is still the same claim, one job per stack in order."""
    async with store_and_session(postgres_url) as (store, db):
        first, _, other = await enqueue(store, job("a"), job("a"), job("b"))
        old_claim = "SELECT * FROM claim_job($1, $2, $3)"  # that version's CLAIM
        taken = [await db.fetchrow(old_claim, NOW, "old-node", NOW + 30) for _ in range(3)]
    assert [(r["id"], r["node"]) for r in taken if r is not None] == [
        (first, "old-node"),
        (other, "old-node"),
    ]
    assert taken[2] is None


async def test_a_claim_retried_while_its_first_try_still_runs_gets_that_try_s_job(
    postgres_url: str,
) -> None:
    """The first try of a claim is still under way (its answer timed out while its commit waited)
    when its retry starts: the retry cannot see that try's job yet, and must not take a second one.
    It waits for the first try, then gets that try's job."""
    async with store_and_session(postgres_url) as (store, db):
        first, second = await enqueue(store, job("a"), job("b"))
        first_try = db.transaction()
        await first_try.start()
        taken = await db.fetchrow(CLAIM_SQL, NOW, store.node, NOW + 30, "token-1")
        assert taken is not None and taken["id"] == first
        retry = asyncio.create_task(store.claim_next(NOW, "token-1"))
        await asyncio.sleep(0.3)
        assert not retry.done()  # waiting for the first try
        await first_try.commit()
        again = await retry
        assert again is not None and again.id == first
        waiting = await store.get_job(second)
        assert waiting is not None and waiting.status == JobStatus.QUEUED


async def test_a_step_sent_again_while_its_first_send_still_runs_is_recorded_once(
    postgres_url: str,
) -> None:
    """The first send of a step still waits on the server (here behind a lease renewal's lock on
    the job) when the runner sends it again on another connection: neither statement's snapshot
    sees the other's row, and only the unique index keeps the second out."""
    async with store_and_session(postgres_url) as (store, db):
        fenced, unfenced = await enqueue(store, job("a"), job("b"))
        running = await store.claim_next(NOW)
        assert running is not None and running.id == fenced
        up = StepRecord("up", NOW, 12.5, "succeeded", None, {"create": 1})
        renewal = db.transaction()
        await renewal.start()
        await db.execute(
            "UPDATE jobs SET lease_expires_at = lease_expires_at WHERE id = $1", fenced
        )
        sends = [
            asyncio.create_task(store.add_step(fenced, up, fence=running.fence, key="k"))
            for _ in "ab"
        ]
        await asyncio.sleep(0.3)
        assert not any(send.done() for send in sends)  # both wait for the renewal
        await renewal.commit()
        await asyncio.gather(*sends)
        await asyncio.gather(*(store.add_step(unfenced, up, key="k") for _ in range(8)))
        counts = await db.fetch(
            "SELECT job_id, count(*) AS n FROM steps GROUP BY job_id ORDER BY job_id"
        )
    assert [(r["job_id"], r["n"]) for r in counts] == [(fenced, 1), (unfenced, 1)]


async def test_a_claim_reads_the_queue_up_to_the_job_it_takes(postgres_url: str) -> None:
    """A session that planned its claims while the queue was empty (a node started before a burst)
    still claims from a backlog of 1,000 in a few index reads. Migration 0006's claim asked of each
    candidate whether an earlier job was queued on its stack, and that plan answered it by reading
    every queued job: a claim read the whole backlog, and draining n jobs cost n²."""
    async with store_and_session(postgres_url) as (store, db):
        for _ in range(10):  # past plpgsql's first custom plans: the session's plan is now kept
            assert await db.fetch(CLAIM_SQL, NOW, "node-a", NOW + 30, None) == []
        await queue_backlog(store, "QBACKLOG")
        claimed, read = await jobs_read_by(
            db, lambda: db.fetch(CLAIM_SQL, NOW, "node-a", NOW + 30, None)
        )
    assert [r["stack"] for r in claimed] == ["s0"]
    assert read < 50, f"one claim read {read} jobs"


async def test_a_claim_passes_over_the_jobs_queued_behind_a_running_one(postgres_url: str) -> None:
    """1,000 jobs queued behind a busy stack: the claim of another stack's job reads a few, where
    it tested each of the 1,000 before (parking, migration 0011). The recording of a job behind a
    running one waits for that job's end if it is under way, and then does not park it."""
    async with store_and_session(postgres_url) as (store, db):
        for _ in range(10):  # past plpgsql's first custom plans: the session's plan is now kept
            assert await db.fetch(CLAIM_SQL, NOW, "node-a", NOW + 30, None) == []
        [busy] = await enqueue(store, job("busy"))
        running = await store.claim_next(NOW)
        assert running is not None and running.id == busy
        for start in range(0, 1000, 250):
            await store.record_deliveries(
                [(delivery(f"QBUSY{i}"), [job("busy")]) for i in range(start, start + 250)]
            )
        [free] = await enqueue(store, job("free"), incident="QFREE")
        claimed, read = await jobs_read_by(
            db, lambda: db.fetch(CLAIM_SQL, NOW, "node-a", NOW + 30, None)
        )
        assert [r["id"] for r in claimed] == [free]
        assert read < 50, f"one claim read {read} jobs"

        ending = db.transaction()  # the busy stack's job ends, its commit not yet made
        await ending.start()
        await db.execute("UPDATE jobs SET status = 'succeeded' WHERE id = $1", busy)
        recording = asyncio.create_task(enqueue(store, job("busy"), incident="QLAST"))
        await asyncio.sleep(0.3)
        assert not recording.done()  # it waits for the end it read
        await ending.commit()
        [last] = await recording
        parked = await db.fetch("SELECT id FROM jobs WHERE parked ORDER BY id")
    assert last not in [r["id"] for r in parked] and len(parked) == 999  # the first is unparked


async def test_the_safety_net_unparks_a_job_no_claim_would_take(postgres_url: str) -> None:
    async with store_and_session(postgres_url) as (store, db):
        await stall_and_unpark(store, db.execute)


async def test_next_due_probes_each_waiting_retry_by_its_stack(postgres_url: str) -> None:
    """An idle worker's `next_due`, planned while the queue was empty, with 20 retries waiting behind
    1,000 queued jobs: each retry's stack is looked up, not the queue before it read (migration
    0006's plan read 20,020 jobs here)."""
    async with store_and_session(postgres_url) as (store, db):
        for _ in range(10):  # past the first custom plans: the session's plan is now kept
            assert await db.fetchval(NEXT_DUE_SQL) is None
        await queue_backlog(store, "QWAIT")
        await db.execute("UPDATE jobs SET not_before = $1 + id WHERE id > 980", NOW)
        first_retry = await db.fetchval("SELECT min(not_before) FROM jobs WHERE not_before > 0")
        due, read = await jobs_read_by(db, lambda: db.fetchval(NEXT_DUE_SQL))
    assert due == first_retry
    assert read < 200, f"next_due read {read} jobs"


async def test_a_coalescing_job_finds_the_runs_it_supersedes_by_their_stack(
    postgres_url: str,
) -> None:
    """Recording a coalescing job supersedes the older queued runs on its stack: found among that
    stack's own jobs, not by reading every queued job before it (which a plan kept from an empty
    queue did, so each delivery cost more as a backlog grew)."""
    async with store_and_session(postgres_url) as (store, db):
        for _ in range(10):  # past the first custom plans: the session's plan is now kept
            assert await db.fetch(SUPERSEDE, 1, NOW, "pb", "proj", "s0") == []
        await queue_backlog(store, "QCOAL", coalesce=True)
        newest = await db.fetchval("SELECT max(id) FROM jobs")
        superseded, read = await jobs_read_by(
            db, lambda: db.fetch(SUPERSEDE, newest + 1, NOW, "pb", "proj", "s0")
        )
    assert [r["playbook"] for r in superseded] == ["pb"]
    assert read < 10, f"superseding read {read} jobs"


async def test_a_result_with_an_attempt_left_commits_without_waiting_for_the_wal_flush() -> None:
    """A job's result is committed lazily when it has an attempt left and queues no notes: lost with
    the server's last moments, the job is run again, as after a crash. A last attempt's result waits
    (that recovery would record it failed), and so does one with notes (their write-back is sent
    once committed), and one that claims the worker's next job (forgotten, it could run twice).
    Shown with commits that wait made to wait for good: for a synchronous standby that is not
    there."""
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    store = PostgresStore(server.url(), command_timeout=5)
    admin = await asyncpg.connect(server.url())
    try:
        # The tests' clusters commit lazily throughout (for speed): this one waits, as production.
        await admin.execute("ALTER DATABASE postgres SET synchronous_commit = on")
        await store.open()
        last_one = dataclasses.replace(job("r3"), max_attempts=1)
        jobs = [job("r1"), job("r2"), last_one, job("r4"), job("r5")]
        await store.record_deliveries([(delivery(f"QRESULT{j.stack}"), [j]) for j in jobs])
        lazy, with_notes, last, claimer = [await store.claim_next(NOW) for _ in range(4)]
        assert lazy is not None and with_notes is not None and last is not None
        assert claimer is not None and claimer.stack == "r4"
        assert last.max_attempts == 1
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)  # the server's processes reload their configuration

        with pytest.raises(TimeoutError):  # it claims r5: it waits
            await asyncio.wait_for(
                store.finish(
                    claimer.id,
                    JobStatus.SUCCEEDED,
                    NOW,
                    fence=claimer.fence,
                    then_claim=NextClaim("t1", NOW),
                ),
                timeout=1,
            )
        # Nothing left to claim: lazy again.
        await asyncio.wait_for(
            store.finish(
                lazy.id, JobStatus.SUCCEEDED, NOW, fence=lazy.fence, then_claim=NextClaim("t2", NOW)
            ),
            timeout=3,
        )
        found = await admin.fetchval("SELECT status FROM jobs WHERE id = $1", lazy.id)
        assert found == JobStatus.SUCCEEDED
        note = NewNote("slack", "", "{}", "key-1")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                store.finish(
                    with_notes.id, JobStatus.SUCCEEDED, NOW, fence=with_notes.fence, notes=[note]
                ),
                timeout=1,
            )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                store.finish(last.id, JobStatus.SUCCEEDED, NOW, fence=last.fence), timeout=1
            )
    finally:
        await admin.close()
        await store.close()
        await asyncio.to_thread(server.stop)


class CountingDb:
    """A connection that counts the exchanges made on it (each call is one round trip)."""

    def __init__(self, db: Any) -> None:
        self.db, self.calls = db, list[str]()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.db, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await method(*args, **kwargs)

        return counted


async def test_a_commit_s_unrelated_deliveries_are_read_together_then_written_together(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight deliveries of eight incidents recorded in one commit: one round trip takes their locks,
    one reads them all, one writes them all (not two a delivery). A repeat among them (a ninth,
    sent again) starts a second pair after the delivery it repeats is written."""
    exchanges: list[list[str]] = []
    record = postgres_deliveries.record_requests

    async def counted(db: Any, requests: Any, parked: Any = None) -> Any:
        exchanges.append((counting := CountingDb(db)).calls)
        return await record(counting, requests, parked)  # type: ignore[arg-type]

    monkeypatch.setattr(postgres_deliveries, "record_requests", counted)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        sent = [(delivery(f"QW{i}"), [job(f"w{i}")]) for i in range(8)]
        recorded = await store.record_deliveries(sent)
        assert all(r.created and len(r.job_ids) == 1 for r in recorded)
        assert exchanges == [["execute", "fetchmany", "fetchmany"]]
        again = (delivery("QW8", id="wh-W"), [job("w8")])
        recorded = await store.record_deliveries([again, (delivery("QW9"), [job("w9")]), again])
    finally:
        await store.close()
    assert [r.created for r in recorded] == [True, True, False]
    assert exchanges[1] == ["execute", "fetchmany", "fetchmany", "fetchmany"]


async def test_a_key_the_server_cannot_index_fails_its_request_alone(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the store's own limit on keys (lifted here), PostgreSQL refuses an index entry over
    2,704 bytes, which aborts the group commit: the request that holds it is refused, and the
    others of its commit are stored, not all answered with the store unavailable."""
    monkeypatch.setattr(limits, "MAX_KEY_BYTES", 1_000_000)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        huge = delivery("QHUGE", id=secrets.token_urlsafe(6000))  # incompressible: not shrunk
        calls = [store.record_delivery(delivery(f"QI{i}"), [job(f"i{i}")]) for i in range(4)]
        calls.insert(2, store.record_delivery(huge, [job("huge")]))
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        rejected = outcomes.pop(2)
        assert isinstance(rejected, RecordRejected), rejected
        assert "ProgramLimitExceededError" in str(rejected)
        assert all(not isinstance(o, BaseException) and o.created for o in outcomes), outcomes
    finally:
        await store.close()


async def test_a_store_lost_while_a_refused_commit_is_retried_keeps_what_was_committed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit with a refused request is retried one request at a time. If the store fails
    partway, the requests already committed are answered as stored (not with a 503 for a stored
    delivery), and those left fail at once with the store's error, without each being tried."""
    record, tried = postgres_deliveries.record_requests, list[str]()
    good, bad = [delivery(f"QR{i}") for i in range(3)], delivery("QRBAD")

    async def refusing_then_failing(db: Any, requests: Any, parked: Any = None) -> Any:
        sent = [d for request in requests for d, _ in request]
        if len(requests) == 1:
            tried.append(sent[0].incident_id)
            if sent[0] is good[1]:
                raise StoreUnavailable("job store unavailable: the connection dropped")
        if bad in sent:  # as the server refuses a value: the whole commit is aborted
            raise RecordRejected("the store refused the delivery")
        return await record(db, requests, parked)

    monkeypatch.setattr(postgres_deliveries, "record_requests", refusing_then_failing)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        calls = [store.record_delivery(d, [job(d.incident_id)]) for d in (good[0], bad, *good[1:])]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        first, refused, lost, left = outcomes
        assert not isinstance(first, BaseException) and first.created
        assert isinstance(refused, RecordRejected)
        assert isinstance(lost, StoreUnavailable) and isinstance(left, StoreUnavailable)
        assert tried == ["QR0", "QRBAD", "QR1"]  # the last one was not tried
        assert await store.incident("QR0") is not None and await store.incident("QR2") is None
    finally:
        await store.close()


async def test_text_postgresql_cannot_hold_is_a_clear_error_or_stored_made_storable(
    make_client: Callable[..., Awaitable[Client]], postgres_url: str, logs: LogCapture
) -> None:
    """A NUL in a read's id is the caller's error (400, logged as a request's, not a delivery's),
    not an outage (503); a job whose failure
    quotes an event's NUL ends failed, its error stored with the NUL replaced, rather than staying
    running with its result retried forever and the node not ready."""

    @playbook()
    @on("incident.triggered")
    async def quote(ctx: Context) -> None:
        """Fail, quoting the incident's title."""
        raise RuntimeError(ctx.incident.title if ctx.incident else "")

    client = await make_client([quote], database_url=postgres_url)
    for path in ("/incidents/a%00b", "/jobs?incident=a%00b"):
        response = await client.http.get(path)
        assert response.status == 400, (path, await response.text())
        assert "cannot hold a value" in (await response.json())["error"]
    assert len(logs.events("request.rejected")) == 2 and not logs.events("delivery.rejected")
    body = pd_event("incident.triggered", "QNUL", title="bad\0title")
    assert (await client.deliver(body, "wh-nul")).status == 202
    [failed] = await client.wait_for_jobs(timeout=30)
    assert failed.status == JobStatus.FAILED, failed
    assert failed.error is not None and "bad\ufffdtitle" in failed.error
    assert (await client.http.get("/readyz")).status == 200


async def test_a_refused_delivery_does_not_break_its_group_commit_up(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery the store refuses (a key over the limit) is refused before it joins a commit:
    the others sent with it still share one commit, not one each (a refusal inside a commit aborts
    it, and its requests are committed again one at a time)."""
    commits: list[int] = []
    record = postgres_deliveries.record_requests

    async def counted(db: Any, requests: Any, parked: Any = None) -> Any:
        commits.append(len(requests))
        return await record(db, requests, parked)

    monkeypatch.setattr(postgres_deliveries, "record_requests", counted)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        too_long = delivery("QLONG", event_id="x" * (limits.MAX_KEY_BYTES + 1))
        calls = [store.record_delivery(delivery(f"QB{i}"), [job(f"b{i}")]) for i in range(4)]
        calls.insert(2, store.record_delivery(too_long, [job("long")]))
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        assert isinstance(outcomes.pop(2), RecordRejected)
        assert all(not isinstance(o, BaseException) and o.created for o in outcomes), outcomes
        assert commits == [4]
    finally:
        await store.close()


async def test_a_role_that_may_not_create_opens_a_migrated_database(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """A hardened deployment: the schema's owner migrated it; the daemon's role may use the tables
    but not create any (PostgreSQL 15 grants no CREATE on `public` by default). Every start after
    the first must still open."""
    owner = PostgresStore(postgres_url)
    await owner.open()
    await owner.close()
    role, password = f"app_{secrets.token_hex(4)}", secrets.token_hex(8)
    database = postgres_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        await admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        for grant in (
            "SELECT, INSERT, UPDATE, DELETE ON ALL TABLES",
            "USAGE, SELECT, UPDATE ON ALL SEQUENCES",
            "EXECUTE ON ALL FUNCTIONS",
        ):
            await admin.execute(f"GRANT {grant} IN SCHEMA public TO {role}")
        url = f"postgresql://{role}:{password}@127.0.0.1:{postgres_server.port}/{database}"
        app = PostgresStore(url)
        await app.open()  # was: permission denied for schema public
        try:
            assert await app.list_jobs() == []
        finally:
            await app.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_database_not_encoded_in_utf8_is_refused_at_open(
    postgres_server: PostgresServer,
) -> None:
    """Text outside LATIN1 would be refused by such a database as if it were the caller's error:
    the store refuses the database instead, saying what it needs."""
    name = f"latin1_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_server.url())
    try:
        await admin.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0")
        store = PostgresStore(postgres_server.url(name))
        with pytest.raises(StoreUnavailable, match="encoded LATIN1; responder needs UTF8"):
            await store.open()
        await store.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_a_lease_shorter_than_a_dead_nodes_cancel_is_warned_of(
    make_client: Callable[..., Awaitable[Client]], postgres_url: str, logs: LogCapture
) -> None:
    """Another node may take a dead node's job over two thirds of a lease after its death, while
    that node's CLI may still be cancelling for up to the kill grace."""
    await make_client([], database_url=postgres_url, lease_seconds=22.0)
    [short] = logs.events("store.lease_short")
    assert short["level"] == "warning" and short["lease_seconds"] == 22.0
    assert "RESPONDER_LEASE_SECONDS at 22.5 or more" in str(short["message"])
    await make_client([], database_url=postgres_url, lease_seconds=22.5)
    assert len(logs.events("store.lease_short")) == 1
