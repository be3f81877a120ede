"""A stack whose destroy keeps failing: its reaps back off, then stop, and it is left `stuck` and
reported; each destroy attempt does not add another postmortem export."""

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from responder.events import Event, Incident
from responder.lifecycle import Reaper
from responder.playbook import Context, on, playbook
from responder.stacks import PulumiEnvironment, PulumiOperations, StackOperations, StackTarget
from responder.store import Caps, JobStatus, NewDelivery, NewJob, StackRecord, StackStatus
from responder.store.sqlite import SQLiteStore
from tests.fakes import FakeOperations, FakeStack
from tests.helpers import API_TOKEN, Client, FakeClock, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
UNDELETABLE = "tests.programs.runtime_review_undeletable:pulumi_program"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "responder.db")
    await opened.open()
    yield opened
    await opened.close()


async def live_stack(store: SQLiteStore, clock: FakeClock, incident: str) -> str:
    """A live stack past its maximum age."""
    stack = f"incident-{incident}"
    created = clock() - 10_000
    record = StackRecord(
        project="burner",
        stack=stack,
        program="burner_program:pulumi_program",
        incident_id=incident,
        playbook="provision",
        service="",
        status=StackStatus.PROVISIONING,
        created_at=created,
        last_activity_at=created,
        last_operation="reserve",
        max_age=3600.0,
    )
    assert await store.reserve_stack(record, Caps()) is None
    await store.touch_stack("burner", stack, operation="up", now=created, status=StackStatus.LIVE)
    return stack


async def run_and_finish(
    store: SQLiteStore, clock: FakeClock, job_ids: list[int], status: JobStatus
) -> None:
    """What the runner would do with each queued job: here every reap's destroy fails."""
    for job_id in job_ids:
        claimed = await store.claim_next(clock())
        assert claimed is not None and claimed.id == job_id
        error = "program_error: refusing to delete" if status == JobStatus.FAILED else None
        await store.finish(job_id, status, clock(), error=error)


def reaper(store: SQLiteStore, clock: FakeClock, ops: StackOperations) -> Reaper:
    return Reaper(
        store,
        ops,
        {},
        notify=lambda: None,
        max_attempts=1,
        approval_timeout=3600,
        reap_attempts=4,
        reap_backoff=100,
        clock=clock,
    )


async def test_failed_reaps_back_off_then_stop_and_the_stack_is_left_stuck(
    store: SQLiteStore, pulumi_env: PulumiEnvironment, logs: LogCapture
) -> None:
    clock, ops = FakeClock(), PulumiOperations(pulumi_env)
    stack = await live_stack(store, clock, "QSTUCK")
    first = reaper(store, clock, ops)

    [one] = await first.run_once()
    await run_and_finish(store, clock, [one], JobStatus.FAILED)
    assert await first.run_once() == []  # not on the next pass
    clock.advance(99)
    assert await first.run_once() == []
    clock.advance(1)  # the first wait: reap_backoff
    [two] = await first.run_once()
    await run_and_finish(store, clock, [two], JobStatus.FAILED)

    clock.advance(199)
    assert await first.run_once() == []
    restarted = reaper(store, clock, ops)  # the waits are read from the store, not remembered
    assert await restarted.run_once() == []
    clock.advance(1)  # twice as long after the second failure
    [three] = await restarted.run_once()
    await run_and_finish(store, clock, [three], JobStatus.FAILED)
    clock.advance(400)
    [four] = await restarted.run_once()
    await run_and_finish(store, clock, [four], JobStatus.FAILED)

    # Four failures in a row: no more reaps, ever; the stack is marked and reported once.
    for _ in range(3):
        clock.advance(100_000)
        assert await restarted.run_once() == []
        assert await reaper(store, clock, ops).run_once() == []
    record = await store.get_stack("burner", stack)
    assert record is not None and record.status == "stuck"
    assert record.last_operation == "reap_abandoned"
    assert [s.stack for s in await store.list_stacks()] == [stack]  # listed, as /stacks shows it
    [abandoned] = logs.events("stack.reap_abandoned")
    assert abandoned["level"] == "error" and abandoned["stack"] == stack
    assert abandoned["failed_reaps"] == 4 and abandoned["job_ids"] == [four, three, two, one]
    assert "refusing to delete" in str(abandoned["error"])


async def test_a_job_that_succeeds_on_the_stack_starts_the_count_again(
    store: SQLiteStore, pulumi_env: PulumiEnvironment
) -> None:
    clock, ops = FakeClock(), PulumiOperations(pulumi_env)
    stack = await live_stack(store, clock, "QRESET")
    lifecycle = reaper(store, clock, ops)
    [one] = await lifecycle.run_once()
    await run_and_finish(store, clock, [one], JobStatus.FAILED)
    clock.advance(100)
    [two] = await lifecycle.run_once()
    await run_and_finish(store, clock, [two], JobStatus.FAILED)
    assert await lifecycle.run_once() == []  # waiting 200 s

    event = Event(
        id="ack", source="pagerduty", type="incident.acknowledged", resource_type="incident",
        incident=Incident(id="QRESET"),
    )  # fmt: skip
    delivery = NewDelivery.of(event, id="ack", body=b"{}", received_at=clock())
    job = NewJob("provision", "burner", stack, event, 1)
    [fixed] = (await store.record_delivery(delivery, [job])).job_ids
    await run_and_finish(store, clock, [fixed], JobStatus.SUCCEEDED)
    [three] = await lifecycle.run_once()  # at once: the failures before the success do not count
    assert three > fixed


@pytest.mark.pulumi
async def test_an_undeletable_stack_is_reaped_a_bounded_number_of_times_and_exported_once(
    make_client: MakeClient, data_dir: Path, logs: LogCapture
) -> None:
    @playbook(max_age=100, project="rtstuck", program=UNDELETABLE)
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Ups a stack that can never be destroyed."""
        await ctx.stack.up()

    clock = FakeClock()
    client = await make_client([provision], clock=clock, reaper_interval=3600, job_max_attempts=1)
    await client.deliver(pd_event("incident.triggered", "QUNDEL"), "undel-t")
    [up] = await client.wait_for_jobs()
    assert up.status == JobStatus.SUCCEEDED, up.error
    lifecycle = client.daemon.reaper
    assert isinstance(lifecycle, Reaper)
    clock.advance(101)

    reaps = []
    for attempt in range(lifecycle.reap_attempts):
        [reap] = await lifecycle.run_once()
        client.daemon.runner.notify()
        jobs = {j.id: j for j in await client.wait_for_jobs()}
        assert jobs[reap].status == JobStatus.FAILED
        assert await lifecycle.run_once() == []  # backing off
        clock.advance(lifecycle.reap_backoff * 2**attempt)
        reaps.append(jobs[reap])

    assert await lifecycle.run_once(sweep=True) == []
    record = await client.daemon.store.get_stack("rtstuck", "incident-QUNDEL")
    assert record is not None and record.status == "stuck"
    [abandoned] = logs.events("stack.reap_abandoned")
    assert abandoned["failed_reaps"] == lifecycle.reap_attempts
    listing = await client.http.get("/stacks?reconcile=false", headers=AUTH)
    [shown] = (await listing.json())["stacks"]
    assert shown["stack"] == "incident-QUNDEL" and shown["status"] == "stuck"

    # One postmortem export: later attempts find it still current (nothing succeeded since).
    exports = list((data_dir / "postmortem").glob("rtstuck--incident-QUNDEL--*.json"))
    assert len(exports) == 1 and record.export_path == str(exports[0])
    steps = [[s.step for s in (await client.daemon.store.get_job(r.id)).steps] for r in reaps]  # type: ignore[union-attr]
    assert steps[0] == ["export", "destroy"]
    assert all(later == ["destroy"] for later in steps[1:]), steps


@pytest.mark.pulumi
async def test_an_undeletable_orphan_without_a_record_is_reaped_a_bounded_number_of_times(
    make_client: MakeClient, pulumi_env: PulumiEnvironment, logs: LogCapture
) -> None:
    @playbook(project="rtorphan", program=UNDELETABLE)
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Declares the project, so the sweep looks for its orphans."""

    clock = FakeClock()
    client = await make_client([provision], clock=clock, reaper_interval=3600, job_max_attempts=1)
    rogue = PulumiOperations(pulumi_env)
    await rogue.start()
    await rogue.up(StackTarget("behind-our-back", "rtorphan", UNDELETABLE))
    await rogue.close()

    lifecycle = client.daemon.reaper
    assert isinstance(lifecycle, Reaper)
    lifecycle.reap_attempts = 2
    [first] = await lifecycle.run_once(sweep=True)
    client.daemon.runner.notify()
    assert (await client.wait_for_jobs())[-1].status == JobStatus.FAILED
    assert await lifecycle.run_once(sweep=True) == []  # backing off
    clock.advance(lifecycle.reap_backoff)
    [second] = await lifecycle.run_once(sweep=True)
    client.daemon.runner.notify()
    assert (await client.wait_for_jobs())[-1].status == JobStatus.FAILED
    clock.advance(100_000)
    assert await lifecycle.run_once(sweep=True) == []
    [abandoned] = logs.events("stack.reap_abandoned")
    assert abandoned["stack"] == "behind-our-back" and abandoned["job_ids"] == [second, first]


async def test_an_orphan_s_failed_reaps_count_only_since_its_last_success(
    store: SQLiteStore,
) -> None:
    """The backoff of an orphan without a record reads that stack's own history, successes too."""
    clock, ops = FakeClock(), FakeOperations()
    ops.stacks = {"rtown/mine": FakeStack(), "rtown/other": FakeStack()}
    lifecycle = Reaper(
        store, ops, {"rtown": "prog"}, notify=lambda: None, max_attempts=1,
        approval_timeout=3600, reap_attempts=2, reap_backoff=100, clock=clock,
    )  # fmt: skip
    reaps = await lifecycle.run_once(sweep=True)
    await run_and_finish(store, clock, reaps, JobStatus.FAILED)
    assert await lifecycle.run_once(sweep=True) == []  # both back off

    event = Event(id="e", source="pagerduty", type="incident.triggered", resource_type="incident")
    delivery = NewDelivery.of(event, id="mine-ok", body=b"{}", received_at=clock())
    [ok] = (await store.record_delivery(delivery, [NewJob("x", "rtown", "mine", event, 1)])).job_ids
    await run_and_finish(store, clock, [ok], JobStatus.SUCCEEDED)
    [fresh] = await lifecycle.run_once(sweep=True)  # at once: its failure came before a success
    assert (await store.get_job(fresh)).stack == "mine"  # type: ignore[union-attr]
    clock.advance(100)
    [other] = await lifecycle.run_once(sweep=True)  # `other` after its backoff, as before
    assert (await store.get_job(other)).stack == "other"  # type: ignore[union-attr]


async def test_the_reaper_unparks_a_job_no_claim_would_take_and_says_so(
    store: SQLiteStore, tmp_path: Path, logs: LogCapture
) -> None:
    clock = FakeClock()
    event = Event(id="e", source="pagerduty", type="incident.triggered", resource_type="incident")
    delivery = NewDelivery.of(event, id="stall", body=b"{}", received_at=clock())
    [job_id] = (await store.record_delivery(delivery, [NewJob("x", "p", "s", event, 1)])).job_ids
    with sqlite3.connect(tmp_path / "responder.db") as db:  # parked behind nothing, as by a bug
        db.execute("UPDATE jobs SET parked = 1 WHERE id = ?", (job_id,))
    assert await store.claim_next(clock()) is None
    woken: list[bool] = []
    lifecycle = Reaper(
        store, FakeOperations(), {}, notify=lambda: woken.append(True), max_attempts=1,
        approval_timeout=3600, clock=clock,
    )  # fmt: skip
    await lifecycle.run_once()
    [unparked] = logs.events("queue.unparked")
    assert unparked["level"] == "error" and unparked["job_ids"] == [job_id] and woken
    claimed = await store.claim_next(clock())
    assert claimed is not None and claimed.id == job_id
