"""Nodes sharing one PostgreSQL store: take-overs, wake-ups and leadership; and the SQLite upgrade
that gave jobs their leases."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from responder.store import Job, JobStatus, LeaseLost, StoreUnavailable
from responder.store.postgres import PostgresStore, connection, migrations, queue
from responder.store.postgres.driver import Db
from responder.store.sqlite import SQLiteStore
from tests.helpers import LogCapture, until
from tests.test_store_contract import NOW, delivery, enqueue, job

KEEPALIVE_SETTINGS = (
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "tcp_user_timeout",
)
DEADLINE = 10.0  # seconds to wait for what another connection or node does


@pytest.fixture
async def nodes(postgres_url: str) -> AsyncIterator[Callable[[], Awaitable[PostgresStore]]]:
    """Opens stores on one database as nodes would, each with its own id; closed afterwards."""
    opened: list[PostgresStore] = []

    async def node() -> PostgresStore:
        store = PostgresStore(postgres_url, lease=30.0)
        await store.open()
        opened.append(store)
        return store

    yield node
    for store in opened:
        await store.close()


async def backends(url: str, role: str, node: str) -> list[int]:
    """The server pids of a node's connections for `role` (listen, leader)."""
    db = await asyncpg.connect(url)
    try:
        found = await db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            f"responder {role} {node}"[:63],
        )
    finally:
        await db.close()
    return [r["pid"] for r in found]


async def kill(url: str, pid: int) -> None:
    db = await asyncpg.connect(url)
    try:
        assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await db.close()


# -- take-overs ----------------------------------------------------------------------------------


async def test_another_node_takes_a_job_over_only_after_its_lease_expired(
    nodes: Callable[[], Awaitable[PostgresStore]],
) -> None:
    a, b = await nodes(), await nodes()
    (queued,) = await enqueue(a, job())
    held = await a.claim_next(NOW)
    assert held is not None and held.node == a.node
    assert await b.take_over(NOW + a.lease - 1) == []
    assert await a.renew_leases({queued: held.fence}, NOW + 20) == set()  # a is alive: renewed
    assert await b.take_over(NOW + a.lease + 1) == []
    [taken] = await b.take_over(NOW + 20 + a.lease + 1)  # a stopped renewing
    assert (taken.id, taken.node, taken.fence) == (queued, b.node, held.fence + 1)
    assert await a.renew_leases({queued: held.fence}, NOW + 60) == {queued}
    with pytest.raises(LeaseLost):
        await a.finish(queued, JobStatus.SUCCEEDED, NOW + 60, fence=held.fence)
    await b.finish(queued, JobStatus.SUCCEEDED, NOW + 60, fence=taken.fence)


async def test_nodes_taking_over_at_once_take_each_job_exactly_once(
    nodes: Callable[[], Awaitable[PostgresStore]],
) -> None:
    dead, *alive = [await nodes() for _ in range(3)]
    ids = await enqueue(dead, *(job(f"s{i}") for i in range(100)))
    for _ in ids:
        assert await dead.claim_next(NOW) is not None
    later = NOW + dead.lease + 1
    # Four connections each, opened beforehand, so that the take-overs do run at the same moment.
    await asyncio.gather(*(node.ping() for node in alive for _ in range(4)))
    calls = [node.take_over(later) for node in alive for _ in range(4)]
    rounds = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)
    taken = [j.id for jobs in rounds for j in jobs]
    assert sorted(taken) == ids  # every job, none twice
    for jobs in rounds:
        assert all(j.fence == 2 and j.node in {n.node for n in alive} for j in jobs)
    for node in alive:
        assert await node.take_over(later) == []


# -- wake-ups ------------------------------------------------------------------------------------


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def next(self) -> int:
        """Wait for a wake-up (the deadline fails the test); the number so far."""
        await asyncio.wait_for(self.event.wait(), DEADLINE)
        self.event.clear()
        return self.count


async def test_a_node_is_woken_when_another_makes_a_job_runnable(
    nodes: Callable[[], Awaitable[PostgresStore]],
) -> None:
    """New queued jobs, a retry, a finished job (its stack freed), an approval, a cancelled waiting
    job: each wakes the listening node. A write that must not wake it (a scheduled job; the
    listener's own work, which it knows of) would show as one wake-up too many in the count at a
    later one."""
    listener, other = await nodes(), await nodes()
    wakes = Wakes()
    await listener.listen(wakes)
    first, second = await enqueue(other, job("a"), job("a"))
    assert await wakes.next() == 1
    await enqueue(other, job("later", delay=60.0), incident="QLATER")  # nothing runnable
    await enqueue(listener, job("mine"), incident="QMINE")  # its own: it knows
    running = await other.claim_next(NOW)
    assert running is not None and running.id == first
    await other.retry_later(first, NOW + 5, "transient", fence=running.fence)
    assert await wakes.next() == 2
    again = await other.claim_next(NOW + 5)
    assert again is not None and again.id == first
    await other.finish(first, JobStatus.SUCCEEDED, NOW + 6, fence=again.fence)
    assert await wakes.next() == 3
    gated = await other.claim_next(NOW + 6)
    assert gated is not None and gated.id == second
    await other.await_approval(second, {"steps": []}, NOW + 6, fence=gated.fence)
    await other.decide(second, True, NOW + 7)
    assert await wakes.next() == 4
    cancelled = await other.request_cancel(second, NOW + 8)  # a waiting job holding its stack
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert await wakes.next() == 5


async def test_work_made_runnable_close_together_is_announced_once(
    nodes: Callable[[], Awaitable[PostgresStore]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each NOTIFY is a commit of its own: the jobs a node frees one after another within the
    window share one. (The window is widened here, so that a slow machine still fits the burst.)"""
    monkeypatch.setattr(connection, "ANNOUNCE_WINDOW", 1.0)
    listener, other = await nodes(), await nodes()
    wakes = Wakes()
    await listener.listen(wakes)
    await enqueue(other, *(job(f"s{i}") for i in range(10)))
    assert await wakes.next() == 1
    for _ in range(10):  # each finish frees a stack: an announcement each
        claimed = await other.claim_next(NOW)
        assert claimed is not None
        await other.finish(claimed.id, JobStatus.SUCCEEDED, NOW, fence=claimed.fence)
    assert await wakes.next() == 2
    await asyncio.sleep(1.5)  # nothing else was waiting to be sent
    assert wakes.count == 2


async def claimed_while_another_listens(
    nodes: Callable[[], Awaitable[PostgresStore]],
) -> tuple[PostgresStore, Wakes, Job]:
    """A job of a listening node, claimed by another node (the one returned), with the listener's
    wake-ups: none yet, since a node is not woken by its own work."""
    listener, other = await nodes(), await nodes()
    wakes = Wakes()
    await listener.listen(wakes)
    await enqueue(listener, job("a"))
    claimed = await other.claim_next(NOW)
    assert claimed is not None
    return other, wakes, claimed


async def test_work_made_runnable_just_before_a_node_closes_is_still_announced(
    nodes: Callable[[], Awaitable[PostgresStore]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopping node hands its claims back, then closes its store within the announcement's
    window: the others hear of those jobs then, not at their next poll."""
    # Longer than the test: only the close can send it.
    monkeypatch.setattr(connection, "ANNOUNCE_WINDOW", 30.0)
    other, wakes, claimed = await claimed_while_another_listens(nodes)
    await other.release(claimed.id, claimed.fence, NOW)
    await asyncio.sleep(0.3)
    assert wakes.count == 0  # still in the window
    await asyncio.wait_for(other.close(), 5)
    assert await wakes.next() == 1


async def test_a_result_sent_again_after_its_answer_was_lost_is_announced(
    nodes: Callable[[], Awaitable[PostgresStore]], postgres_url: str
) -> None:
    """The try that wrote the result never announced it (its answer was lost with its connection):
    the retry, taken as a repeat, announces the stack it freed."""
    other, wakes, claimed = await claimed_while_another_listens(nodes)
    db = await asyncpg.connect(postgres_url)
    try:  # the first try, on a connection of its own: written, never announced
        args = ("succeeded", NOW, None, None, claimed.id, claimed.fence, False, *[None] * 4)
        await db.fetchrow(queue.FINISH, *args)
    finally:
        await db.close()
    await asyncio.sleep(0.3)
    assert wakes.count == 0
    await other.finish(claimed.id, JobStatus.SUCCEEDED, NOW, fence=claimed.fence)
    assert await wakes.next() == 1


async def test_a_lost_listening_connection_is_reconnected_and_logged(
    nodes: Callable[[], Awaitable[PostgresStore]], postgres_url: str, logs: LogCapture
) -> None:
    listener, other = await nodes(), await nodes()
    wakes = Wakes()
    await listener.listen(wakes)
    [pid] = await backends(postgres_url, "listen", listener.node)
    await kill(postgres_url, pid)
    await wakes.next()  # once listening again: what was sent meanwhile is lost, so look now
    assert logs.events("store.listen_failed")
    await enqueue(other, job())
    await wakes.next()
    await until(
        lambda: _one_other(postgres_url, "listen", listener.node, pid), "one connection", DEADLINE
    )
    await listener.close()  # stops listening, and closes that connection
    await until(
        lambda: _none(postgres_url, "listen", listener.node), "no connection left", DEADLINE
    )


async def _one_other(url: str, role: str, node: str, pid: int) -> bool:
    found = await backends(url, role, node)
    return len(found) == 1 and pid not in found


async def _none(url: str, role: str, node: str) -> bool:
    return await backends(url, role, node) == []


async def test_listen_returns_while_the_database_is_away_and_close_stops_it(
    postgres_url: str, logs: LogCapture
) -> None:
    """listen() does not wait for a database that is gone (a runner starts anyway); it keeps
    trying, logged, until close()."""
    store = PostgresStore(postgres_url, connect_timeout=2)
    await store.open()
    database = postgres_url.rsplit("/", 1)[1]
    store.url = postgres_url.replace(database, "no_such_database")  # only new connections see it
    await asyncio.wait_for(store.listen(lambda: None), DEADLINE)

    async def retried() -> bool:
        return len(logs.events("store.listen_failed")) >= 2

    await until(retried, "a failed attempt is logged and tried again", DEADLINE)
    await asyncio.wait_for(store.close(), DEADLINE)
    assert logs.events("store.listen_stopped") == []


# -- leadership ----------------------------------------------------------------------------------


async def test_one_node_leads_until_it_closes(
    nodes: Callable[[], Awaitable[PostgresStore]], postgres_url: str
) -> None:
    a, b = await nodes(), await nodes()
    assert await a.lead()
    assert not await b.lead()
    assert await a.lead() and not await b.lead()  # asking again changes nothing
    await a.close()
    await until(b.lead, "the standby takes the leadership", DEADLINE)
    assert await b.lead()
    await until(
        lambda: _none(postgres_url, "leader", a.node), "the leader's connection closed", DEADLINE
    )


async def test_the_leadership_moves_when_the_leader_s_connection_is_killed(
    nodes: Callable[[], Awaitable[PostgresStore]], postgres_url: str
) -> None:
    a, b = await nodes(), await nodes()
    assert await a.lead() and not await b.lead()
    [pid] = await backends(postgres_url, "leader", a.node)
    await kill(postgres_url, pid)
    await until(b.lead, "the standby takes the leadership", DEADLINE)
    assert not await a.lead()  # reconnected: another node leads now
    await until(
        lambda: _one_other(postgres_url, "leader", a.node, pid), "a new connection", DEADLINE
    )
    await b.close()
    await until(a.lead, "the first node leads again", DEADLINE)


async def test_a_leader_whose_connection_died_takes_the_leadership_again(
    nodes: Callable[[], Awaitable[PostgresStore]], postgres_url: str
) -> None:
    a = await nodes()
    assert await a.lead()
    [pid] = await backends(postgres_url, "leader", a.node)
    await kill(postgres_url, pid)
    await until(a.lead, "reconnected and leading", DEADLINE)


async def test_no_database_means_no_leadership(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, connect_timeout=2)
    await store.open()
    try:
        database = postgres_url.rsplit("/", 1)[1]
        store.url = postgres_url.replace(database, "no_such_database")
        with pytest.raises(StoreUnavailable):
            await store.lead()
    finally:
        await store.close()


# -- connections of their own: renewals, and what ends them when a node dies ---------------------


async def test_renewals_answer_while_every_pooled_connection_is_busy(postgres_url: str) -> None:
    """A burst of deliveries can hold the whole pool for seconds: renewals do not wait for it."""
    store = PostgresStore(postgres_url, max_connections=2)
    await store.open()
    try:
        (queued,) = await enqueue(store, job())
        held = await store.claim_next(NOW)
        assert held is not None and store._pool is not None
        busy = [await store._pool.acquire() for _ in range(2)]
        try:
            with pytest.raises(TimeoutError):  # the pool is exhausted indeed
                await asyncio.wait_for(store.ping(), 0.5)
            async with asyncio.timeout(DEADLINE / 2):
                assert await store.renew_leases({queued: held.fence}, NOW + 10) == set()
                assert await store.renew_leases({queued: held.fence - 1}, NOW + 11) == {queued}
        finally:
            for db in busy:
                await store._pool.release(db)
        renewed = await store.get_job(queued)
        assert renewed is not None and renewed.lease_expires_at == NOW + 10 + store.lease
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable):
        await store.renew_leases({queued: held.fence}, NOW + 12)


async def test_a_lost_renewal_connection_is_replaced_at_once(
    nodes: Callable[[], Awaitable[PostgresStore]], postgres_url: str
) -> None:
    """The server ended it (a restart, an administrator): the next renewal still succeeds."""
    store = await nodes()
    (queued,) = await enqueue(store, job())
    held = await store.claim_next(NOW)
    assert held is not None
    assert await store.renew_leases({queued: held.fence}, NOW + 1) == set()
    [pid] = await backends(postgres_url, "leases", store.node)
    await kill(postgres_url, pid)
    assert await store.renew_leases({queued: held.fence}, NOW + 2) == set()
    assert await _one_other(postgres_url, "leases", store.node, pid)
    await store.close()
    await until(
        lambda: _none(postgres_url, "leases", store.node), "its connection closed", DEADLINE
    )


async def test_the_server_notices_a_dead_node_s_connections_within_seconds(
    nodes: Callable[[], Awaitable[PostgresStore]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TCP keepalives on every connection, the leader's, the listener's and the renewals' above
    all: without them a leader whose machine lost power would hold the leadership for ~2 h."""
    store = await nodes()
    made: list[asyncpg.Connection] = []
    connect = store._connect

    async def recorded(role: str) -> asyncpg.Connection:
        made.append(await connect(role))
        return made[-1]

    monkeypatch.setattr(store, "_connect", recorded)
    assert await store.lead()
    await store.listen(lambda: None)
    (queued,) = await enqueue(store, job())
    held = await store.claim_next(NOW)
    assert held is not None
    await store.renew_leases({queued: held.fence}, NOW)
    assert len(made) == 3

    async def dead_after(db: Db) -> float:
        idle, interval, count, user_timeout = [
            await db.fetchval(f"SELECT setting::float FROM pg_settings WHERE name = '{name}'")
            for name in KEEPALIVE_SETTINGS
        ]
        assert idle > 0 and interval > 0 and count > 0 and user_timeout > 0  # 0: the OS default
        return float(max(idle + interval * count, user_timeout / 1000))

    for db in made:
        assert await dead_after(db) <= 30
    assert await store._run(dead_after) <= 30  # pooled ones too: a transaction holds locks


# -- the upgrades that added leases --------------------------------------------------------------


async def test_a_postgres_store_of_version_1_is_migrated_and_its_running_job_taken_over(
    postgres_url: str,
) -> None:
    db = await asyncpg.connect(postgres_url)
    try:
        assert await migrations.migrate(db, migrations.available()[:1]) == [1]
        await db.execute(
            "INSERT INTO payloads VALUES ('p', '{}');"
            " INSERT INTO deliveries (id, source, event_id, event_type, incident_id, status,"
            " payload, received_at) VALUES ('d1', 'pagerduty', 'e1', 'incident.triggered', 'Q1',"
            " 'accepted', 'p', 1);"
            " INSERT INTO jobs (delivery_id, playbook, project, stack, event, incident_id,"
            " event_type, status, attempts, max_attempts, created_at, started_at) VALUES ('d1',"
            ' \'pb\', \'proj\', \'s\', \'{"id": "e1", "source": "pagerduty",'
            ' "type": "incident.triggered", "resource_type": "incident"}\', \'Q1\','
            " 'incident.triggered', 'running', 1, 3, 1, 1)"
        )
    finally:
        await db.close()
    store = PostgresStore(postgres_url, node="upgraded")
    await store.open()
    try:
        [running] = await store.list_jobs(status=JobStatus.RUNNING)
        assert (running.node, running.lease_expires_at, running.fence) == (None, None, 0)
        [taken] = await store.take_over(NOW)
        assert (taken.id, taken.node, taken.fence) == (running.id, "upgraded", 1)
        await store.save_stack_settings("proj", "s", "salt")
        assert await store.stack_settings("proj", "s") == "salt"
    finally:
        await store.close()


async def test_a_version_1_sqlite_store_is_upgraded_and_its_running_job_taken_over(
    tmp_path: Path,
) -> None:
    """A store written before leases: its job left running has no lease, and is taken over."""
    path = tmp_path / "responder.db"
    store = SQLiteStore(path)
    await store.open()
    (queued,) = await enqueue(store, job())
    assert await store.claim_next(NOW) is not None
    await store.close()
    with sqlite3.connect(path) as db:  # back to version 1: as that version wrote it
        db.executescript(
            """
            DROP TABLE stack_settings;
            DROP TRIGGER jobs_unpark_next;
            DROP INDEX jobs_ready;
            DROP INDEX jobs_parked;
            ALTER TABLE jobs DROP COLUMN parked;
            ALTER TABLE steps DROP COLUMN key;
            ALTER TABLE jobs DROP COLUMN node;
            ALTER TABLE jobs DROP COLUMN lease_expires_at;
            ALTER TABLE jobs DROP COLUMN fence;
            ALTER TABLE jobs DROP COLUMN claim_token;
            PRAGMA user_version = 1;
            """
        )
    store = SQLiteStore(path, node="upgraded")
    await store.open()
    try:
        [running] = await store.list_jobs(status=JobStatus.RUNNING)
        assert (running.id, running.node, running.lease_expires_at, running.fence) == (
            queued,
            None,
            None,
            0,
        )
        [taken] = await store.take_over(NOW)
        assert (taken.id, taken.node, taken.fence) == (queued, "upgraded", 1)
        await store.save_stack_settings("proj", "s1", "salt")
        assert await store.stack_settings("proj", "s1") == "salt"
        assert (await store.record_delivery(delivery("QNEW"), [job("s2")])).created
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (5,)
