"""Job parking under random sequences of store operations: a stateful property test against the
`Store` API, on SQLite and PostgreSQL (written by a review of the change; it fails with the unparking
trigger dropped, `PARK_SABOTAGE=1`).

After every step:
- no stack runs two jobs;
- no stack that runs nothing has a parked job first in line (the state `unpark_stalled` repairs:
  read from the table, since only the table says which jobs are parked);
- if a job is due and first in line on a stack that runs nothing, `claim_next(now)` takes one, and
  exactly the one the rules name (the lowest id of those), parking or not; the probe's claim is then
  handed back with `release` (as a stopping worker does), so the state is as before but for the fence.
Every claim (`claim_next`, `finish(..., then_claim=)`) must take exactly the job the rules name:
arrival order per stack, one running job per stack. At the end of each example, `unpark_stalled()`
finds nothing. `unpark_stalled` is never called before that.

Deterministic (derandomize), deadline off, bounded: PARK_EXAMPLES / PARK_STEPS scale it up.
"""

import asyncio
import contextlib
import itertools
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from responder.store import (
    DeliveryStatus,
    JobStatus,
    LeaseLost,
    NewDelivery,
    NewJob,
    NextClaim,
    Store,
)
from responder.store.postgres import PostgresStore
from responder.store.sqlite import SQLiteStore
from tests.helpers import bare_event
from tests.postgres_server import PostgresServer, fresh_database

NOW = 1_800_000_000.0
T = TypeVar("T")
LEASE = 10.0
STACKS = ("a", "b", "c")
INCIDENTS = ("I1", "I2")
CANCEL_EVENT = "incident.acknowledged"  # news of its incident: cancels its scheduled jobs
EXAMPLES = int(os.environ.get("PARK_EXAMPLES", "200"))
STEPS = int(os.environ.get("PARK_STEPS", "40"))
STATS: Counter[str] = Counter()  # printed with -s
SABOTAGE = os.environ.get("PARK_SABOTAGE") == "1"

_ids = itertools.count(1)


@dataclass(frozen=True)
class Row:
    id: int
    project: str
    stack: str
    status: str
    not_before: float
    parked: bool
    node: str | None
    fence: int
    cancel_requested: bool


COLUMNS = "id, project, stack, status, not_before, parked, node, fence, cancel_requested"


def expected_claim(rows: list[Row], now: float) -> int | None:
    """The job a claim at `now` must take, by the queue's rules alone (parking is not one of them):
    due scheduled jobs join the queue in their place; of the stacks that run nothing, the first
    queued job of each, if due; the lowest id of those."""
    status = {r.id: r.status for r in rows}
    due = {r.id: r.not_before for r in rows}
    for r in rows:
        if r.status == "scheduled" and 0 < r.not_before <= now:
            status[r.id], due[r.id] = "queued", 0.0
    candidates = []
    for stack in {(r.project, r.stack) for r in rows}:
        mine = [r for r in rows if (r.project, r.stack) == stack]
        if any(status[r.id] == "running" for r in mine):
            continue
        queued = [r.id for r in mine if status[r.id] == "queued"]
        if queued and due[min(queued)] <= now:
            candidates.append(min(queued))
    return min(candidates, default=None)


def stalled(rows: list[Row]) -> list[int]:
    """Parked jobs first in line on a stack that runs nothing: no end would ever unpark them."""
    found = []
    for stack in {(r.project, r.stack) for r in rows}:
        mine = [r for r in rows if (r.project, r.stack) == stack]
        queued = [r for r in mine if r.status == "queued"]
        if queued and not any(r.status == "running" for r in mine) and queued[0].parked:
            found.append(queued[0].id)
    return sorted(found)


class Backend:
    """Two stores (nodes) on one set of data, a direct reader of its jobs, a fresh start."""

    stores: list[Store]

    async def fresh(self) -> list[Store]:
        raise NotImplementedError

    async def rows(self) -> list[Row]:
        raise NotImplementedError

    async def end(self) -> None:
        raise NotImplementedError


class SQLiteBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.db: sqlite3.Connection | None = None
        self.stores = []

    async def fresh(self) -> list[Store]:
        self.n += 1
        path = self.root / f"r{self.n}" / "responder.db"
        self.stores = [SQLiteStore(path, node=f"node-{x}", lease=LEASE, inline=True) for x in "AB"]
        for store in self.stores:
            await store.open()
        self.db = sqlite3.connect(path, isolation_level=None)
        if SABOTAGE:  # a self-check: without the trigger, the test must fail
            self.db.execute("DROP TRIGGER jobs_unpark_next")
        return self.stores

    async def rows(self) -> list[Row]:
        assert self.db is not None
        found = self.db.execute(f"SELECT {COLUMNS} FROM jobs ORDER BY id").fetchall()
        return [
            Row(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], bool(r[8])) for r in found
        ]

    async def end(self) -> None:
        for store in self.stores:
            await store.close()
        if self.db is not None:
            self.db.close()
            self.db = None


class PostgresBackend(Backend):
    """One database for all examples, emptied before each; the stores stay open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db: asyncpg.Connection | None = None
        self.stores = []

    async def fresh(self) -> list[Store]:
        if not self.stores:
            self.stores = [PostgresStore(self.url, node=f"node-{x}", lease=LEASE) for x in "AB"]
            for store in self.stores:
                await store.open()
            self.db = await asyncpg.connect(self.url)
            if SABOTAGE:
                await self.db.execute("DROP TRIGGER jobs_unpark_next ON jobs")
        assert self.db is not None
        await self.db.execute(
            "TRUNCATE jobs, steps, notes, deliveries, payloads, incidents RESTART IDENTITY CASCADE"
        )
        return self.stores

    async def rows(self) -> list[Row]:
        assert self.db is not None
        found = await self.db.fetch(f"SELECT {COLUMNS} FROM jobs ORDER BY id")
        return [Row(*tuple(r)) for r in found]

    async def end(self) -> None:
        pass  # kept for the next example

    async def close(self) -> None:
        for store in self.stores:
            await store.close()
        if self.db is not None:
            await self.db.close()


job_kinds = st.sampled_from(["queued", "queued", "queued", "coalesce", "scheduled", "cancel_on"])
new_jobs = st.lists(st.tuples(st.sampled_from(STACKS), job_kinds), min_size=1, max_size=2)
picks = st.integers(min_value=0, max_value=1000)
nodes = st.sampled_from([0, 1])


class Parking(RuleBasedStateMachine):
    backend: Backend
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.stores = self.run(self.backend.fresh())
        self.was_parked: set[int] = set()
        self.eager = False

    @initialize(eager=st.booleans())
    def workers(self, eager: bool) -> None:
        """Eager workers keep what the probe claims (as idle workers would); else it goes back."""
        self.eager = eager

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def rows(self) -> list[Row]:
        return self.run(self.backend.rows())

    def pick(self, statuses: tuple[str, ...], n: int) -> Row | None:
        found = [r for r in self.rows() if r.status in statuses]
        return found[n % len(found)] if found else None

    def holder(self, row: Row) -> Store:
        [store] = [s for s in self.stores if s.node == row.node]
        return store

    def check_claim(self, before: list[Row], got: int | None, what: str) -> None:
        expected = expected_claim(before, self.now)
        assert got == expected, f"{what}: claimed {got}, the rules name {expected}"

    # -- intake ---------------------------------------------------------------------------------

    @rule(
        jobs=new_jobs,
        incident=st.sampled_from(INCIDENTS),
        event_type=st.sampled_from(["incident.annotated", "incident.annotated", CANCEL_EVENT]),
        also=st.none() | st.tuples(new_jobs, st.sampled_from(INCIDENTS)),
    )
    def record(self, jobs, incident, event_type, also) -> None:  # type: ignore[no-untyped-def]
        requests = [(self.delivery(incident, event_type), [self.job(*j) for j in jobs])]
        if also is not None:  # a second delivery in the same transaction
            more, other = also
            requests.append(
                (self.delivery(other, "incident.annotated"), [self.job(*j) for j in more])
            )
        self.run(self.stores[0].record_deliveries(requests))

    def delivery(self, incident: str, event_type: str) -> NewDelivery:
        n = next(_ids)
        return NewDelivery(
            id=f"d-{n}", source="pagerduty", event_id=f"e-{n}", event_type=event_type,
            incident_id=incident, status=DeliveryStatus.ACCEPTED, body=b"{}", received_at=self.now,
        )  # fmt: skip

    def job(self, stack: str, kind: str) -> NewJob:
        return NewJob(
            playbook="coalescing" if kind == "coalesce" else "pb",
            project="proj",
            stack=stack,
            event=bare_event(),
            max_attempts=3,
            delay=7.0 if kind in ("scheduled", "cancel_on") else 0.0,
            coalesce=kind == "coalesce",
            cancel_on=(CANCEL_EVENT,) if kind == "cancel_on" else (),
        )

    # -- claims and ends ------------------------------------------------------------------------

    @rule(node=nodes)
    def claim(self, node: int) -> None:
        before = self.rows()
        got = self.run(self.stores[node].claim_next(self.now, token=f"t-{next(_ids)}"))
        self.check_claim(before, got.id if got else None, "claim_next")

    # Claims and recordings are the common steps: more rules draw them (the rules are drawn alike).
    @rule(node=nodes)
    def claim_again(self, node: int) -> None:
        self.claim(node)

    @rule(node=nodes)
    def claim_once_more(self, node: int) -> None:
        self.claim(node)

    @rule(jobs=new_jobs, incident=st.sampled_from(INCIDENTS))
    def record_more(self, jobs, incident) -> None:  # type: ignore[no-untyped-def]
        self.record(jobs, incident, "incident.annotated", None)

    @rule(
        n=picks,
        status=st.sampled_from([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]),
        then_claim=st.booleans(),
    )
    def finish(self, n: int, status: JobStatus, then_claim: bool) -> None:
        row = self.pick(("running",), n)
        if row is None:
            return
        before = self.rows()
        after = [r if r.id != row.id else replace(r, status=status.value) for r in before]
        claim = NextClaim(f"t-{next(_ids)}", self.now) if then_claim else None
        got = self.run(
            self.holder(row).finish(row.id, status, self.now, fence=row.fence, then_claim=claim)
        )
        if then_claim:
            STATS["then_claim took a job"] += got is not None
            self.check_claim(after, got.id if got else None, "finish(then_claim)")

    @rule(n=picks, then_claim=st.booleans())
    def succeed(self, n: int, then_claim: bool) -> None:
        self.finish(n, JobStatus.SUCCEEDED, then_claim)

    @rule(n=picks, delay=st.sampled_from([0.0, 3.0, 12.0]))
    def retry_later(self, n: int, delay: float) -> None:
        row = self.pick(("running",), n)
        if row is not None:
            self.run(
                self.holder(row).retry_later(row.id, self.now + delay, "transient", fence=row.fence)
            )

    @rule(n=picks)
    def release(self, n: int) -> None:
        row = self.pick(("running",), n)
        if row is not None:
            self.run(self.holder(row).release(row.id, row.fence, self.now))

    @rule(n=picks)
    def await_approval(self, n: int) -> None:
        row = self.pick(("running",), n)
        if row is not None:
            self.run(
                self.holder(row).await_approval(row.id, {"plan": 1}, self.now, fence=row.fence)
            )

    @rule(n=picks, approve=st.booleans(), node=nodes)
    def decide(self, n: int, approve: bool, node: int) -> None:
        row = self.pick(("awaiting_approval",), n)
        if row is not None:
            decision = self.run(self.stores[node].decide(row.id, approve, self.now, "no"))
            assert decision is not None and decision.made

    @rule(
        n=picks,
        which=st.sampled_from(
            [
                ("queued",),
                ("running",),
                ("scheduled",),
                ("awaiting_approval",),
                ("queued", "running"),
            ]
        ),
        node=nodes,
    )
    def request_cancel(self, n: int, which: tuple[str, ...], node: int) -> None:
        row = self.pick(which, n)
        if row is not None:
            self.run(self.stores[node].request_cancel(row.id, self.now))

    # -- time and leases ------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1.0, 4.0, 8.0, LEASE + 1]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(node=nodes)
    def renew(self, node: int) -> None:
        store = self.stores[node]
        held = {
            r.id: r.fence for r in self.rows() if r.status == "running" and r.node == store.node
        }
        self.run(store.renew_leases(held, self.now))

    @rule(node=nodes)
    def take_over(self, node: int) -> None:
        self.run(self.stores[node].take_over(self.now))

    @rule(n=picks)
    def stale_write(self, n: int) -> None:
        """A node that lost its job (taken over) still tries to end it: refused, no change."""
        row = self.pick(("running",), n)
        if row is None or row.fence < 2:
            return
        with contextlib.suppress(LeaseLost):
            self.run(
                self.holder(row).finish(row.id, JobStatus.SUCCEEDED, self.now, fence=row.fence - 1)
            )
            raise AssertionError("a stale fence wrote a result")

    # -- the invariants -------------------------------------------------------------------------

    @invariant()
    def holds(self) -> None:
        """The three checks, in this order (hypothesis would run separate invariants by name)."""
        rows = self.rows()
        self.was_parked |= {r.id for r in rows if r.parked}
        parked = sum(r.parked and r.status == "queued" for r in rows)
        STATS["steps"] += 1
        STATS["steps with a parked job"] += parked > 0
        STATS["steps with a running job"] += any(r.status == "running" for r in rows)
        running = [(r.project, r.stack) for r in rows if r.status == "running"]
        assert len(running) == len(set(running)), f"two running jobs on one stack: {rows}"
        assert not stalled(rows), f"parked job(s) {stalled(rows)} first in line on an idle stack"
        self.probe(rows)

    def probe(self, before: list[Row]) -> None:
        """Without unpark_stalled: the claim at `now` takes the job the rules name; handed back."""
        expected = expected_claim(before, self.now)
        if expected is None:
            return
        STATS["probes"] += 1
        STATS["probes of a job parked when recorded"] += expected in self.was_parked
        store = self.stores[0]
        got = self.run(store.claim_next(self.now))
        assert got is not None, f"job {expected} is due and first in line, and no claim takes it"
        assert got.id == expected, f"probe claimed {got.id}, the rules name {expected}"
        if (
            not self.eager and not got.cancel_requested
        ):  # (else release would cancel it: left running, claimed)
            assert self.run(store.release(got.id, got.fence, self.now)) == JobStatus.QUEUED

    def teardown(self) -> None:
        try:
            for r in self.rows():
                STATS[f"ended {r.status}"] += 1
            found = self.run(self.stores[0].unpark_stalled())
            assert found == [], f"unpark_stalled found {found}"
        finally:
            self.run(self.backend.end())


SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=os.environ.get("PARK_RANDOM") != "1",
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@contextlib.contextmanager
def machine(backend: Backend) -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    Parking.backend, Parking.loop = backend, loop
    try:
        yield loop
    finally:
        loop.close()


def test_parking_keeps_the_queue_live_on_sqlite() -> None:
    with tempfile.TemporaryDirectory(prefix="parking-") as root, machine(SQLiteBackend(Path(root))):
        run_state_machine_as_test(Parking, settings=SETTINGS)


def test_parking_keeps_the_queue_live_on_postgres(postgres_server: PostgresServer) -> None:
    async def database() -> tuple[contextlib.AbstractAsyncContextManager[str], str]:
        manager = fresh_database(postgres_server)
        return manager, await manager.__aenter__()

    with machine(backend := PostgresBackend("")) as loop:
        manager, backend.url = loop.run_until_complete(database())
        try:
            run_state_machine_as_test(
                Parking, settings=settings(SETTINGS, max_examples=max(EXAMPLES // 3, 10))
            )
        finally:
            loop.run_until_complete(backend.close())
            loop.run_until_complete(manager.__aexit__(None, None, None))
