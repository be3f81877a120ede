"""Runner guarantees a mutation check showed untested: coalescing, the per-playbook and per-minute
caps, and the job timeout."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from responder.playbook import Context, Playbook, on, playbook
from responder.store import Job, JobStatus
from tests.helpers import Client, FakeClock, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
SLOW = "tests.programs.slow:pulumi_program"


async def test_a_burst_of_refreshes_while_one_runs_coalesces_into_the_newest(
    make_client: MakeClient,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[int | None] = []

    @playbook(coalesce=True)
    @on("incident.triggered", "incident.acknowledged")
    async def refresh(ctx: Context) -> None:
        """The first run holds the stack until released; later runs return at once."""
        runs.append(ctx.job_id)
        started.set()
        await release.wait()

    client = await make_client([refresh], workers=2)
    first = await client.deliver(pd_event("incident.triggered", "QCOAL"), "coal-0")
    [running] = (await first.json())["jobs"]
    await asyncio.wait_for(started.wait(), 30)
    burst = []
    for i in range(1, 6):
        answer = await client.deliver(pd_event("incident.acknowledged", "QCOAL"), f"coal-{i}")
        assert answer.status == 202
        burst += (await answer.json())["jobs"]
    release.set()
    jobs = {j.id: j for j in await client.wait_for_jobs()}

    newest = burst[-1]
    assert runs == [running, newest]  # six deliveries, two runs
    assert (
        jobs[running].status == JobStatus.SUCCEEDED and jobs[newest].status == JobStatus.SUCCEEDED
    )
    for job_id in burst[:-1]:
        job = jobs[job_id]
        assert job.status == JobStatus.COALESCED
        assert job.coalesced_into is not None and job.coalesced_into > job_id
        assert job.attempts == 0 and job.started_at is None  # it never ran
        record = await (await client.http.get(f"/jobs/{job_id}")).json()
        assert record["status"] == "coalesced" and record["coalesced_into"] == job.coalesced_into
    # Every superseded run leads, through its successors, to the one run that did the work.
    for job_id in burst[:-1]:
        target = jobs[job_id].coalesced_into
        while target is not None and jobs[target].status == JobStatus.COALESCED:
            target = jobs[target].coalesced_into
        assert target == newest


def slow_up(name: str, *, title: str | None = None) -> Playbook:
    """A playbook that ups a one-resource stack taking the incident's `sleep N` title seconds."""

    async def up(ctx: Context) -> None:
        assert ctx.incident is not None
        seconds = ctx.incident.title.split()[-1] if ctx.incident.title.startswith("sleep") else "0"
        await ctx.stack.set_config({"sleep_seconds": seconds})
        await ctx.stack.up()

    up.__name__ = up.__qualname__ = name
    up.__doc__ = f"Up a slow stack ({name})."
    return playbook(project="regress", program=SLOW)(on("incident.triggered", title=title)(up))


async def deliver_and_wait(client: Client, incident: str, **data: str) -> Job:
    answer = await client.deliver(pd_event("incident.triggered", incident, **data), incident)
    assert answer.status == 202, await answer.text()
    [job] = await client.wait_for_jobs(incident_id=incident)
    return job


@pytest.mark.pulumi
async def test_cap_per_playbook_refuses_a_new_stack_over_it(
    make_client: MakeClient, logs: LogCapture
) -> None:
    client = await make_client(
        [slow_up("alpha", title="^alpha"), slow_up("beta", title="^beta")],
        max_stacks_per_playbook=1,
    )
    assert (await deliver_and_wait(client, "QPB1", title="alpha one")).status == JobStatus.SUCCEEDED
    over = await deliver_and_wait(client, "QPB2", title="alpha two")
    assert over.status == JobStatus.REFUSED
    assert "max_stacks_per_playbook=1" in (over.error or "")
    [refused] = logs.events("job.refused")
    assert refused["cap"] == "max_stacks_per_playbook=1" and refused["job_id"] == over.id
    # The cap counts per playbook: another playbook still gets its own stack.
    other = await deliver_and_wait(client, "QPB3", title="beta one")
    assert other.status == JobStatus.SUCCEEDED, other.error
    refused_job = await client.daemon.store.get_job(over.id)
    assert refused_job is not None and refused_job.steps == ()  # nothing ran for it


@pytest.mark.pulumi
async def test_operations_per_minute_cap_refuses_then_recovers(
    make_client: MakeClient, logs: LogCapture
) -> None:
    clock = FakeClock()
    client = await make_client([slow_up("steady")], clock=clock, max_operations_per_minute=1)
    done = await deliver_and_wait(client, "QRATE1")
    assert done.status == JobStatus.SUCCEEDED, done.error
    clock.advance(30)
    over = await deliver_and_wait(client, "QRATE2")
    assert over.status == JobStatus.REFUSED
    assert "max_operations_per_minute=1" in (over.error or "")
    [refused] = logs.events("job.refused")
    assert refused["cap"] == "max_operations_per_minute=1" and refused["job_id"] == over.id
    record = await client.daemon.store.get_stack("regress", over.stack)
    assert record is None or record.status != "provisioning"  # it holds no cap slot
    clock.advance(31)  # the first job's operations are now more than a minute old
    later = await deliver_and_wait(client, "QRATE3")
    assert later.status == JobStatus.SUCCEEDED, later.error


@pytest.mark.pulumi
async def test_a_job_over_the_job_timeout_fails_with_a_timeout(
    make_client: MakeClient, logs: LogCapture
) -> None:
    client = await make_client([slow_up("slow")], job_timeout=5.0, job_max_attempts=1)
    answer = await client.deliver(pd_event("incident.triggered", "QTIME", title="sleep 150"), "t")
    assert answer.status == 202
    [job] = await client.wait_for_jobs(timeout=120)  # well before the resource could finish
    assert job.status == JobStatus.FAILED
    assert "timeout" in (job.error or ""), job.error
    [failed] = logs.events("job.failed")
    assert failed["error_kind"] == "timeout"
