"""Lifecycle repair with the real CLI: stacks gone behind the daemon's back, stacks whose first `up`
failed, and what a job may not choose (its program, the scratch root)."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from responder.events import Event, Incident
from responder.job_stack import JobStack
from responder.playbook import Context, on, playbook
from responder.stacks import PulumiEnvironment, PulumiOperations, StackTarget
from responder.store import JobStatus, NewDelivery, NewJob
from tests.helpers import API_TOKEN, Client, FakeClock, LogCapture, pd_event

pytestmark = pytest.mark.pulumi

MakeClient = Callable[..., Awaitable[Client]]
SLOW = "tests.programs.slow:pulumi_program"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def backend_stacks(client: Client, project: str) -> set[str]:
    directory = client.daemon.settings.data_dir / "pulumi-state" / ".pulumi" / "stacks" / project
    return {p.name.removesuffix(".json") for p in directory.glob("*.json")}


async def settle(client: Client) -> list:  # type: ignore[type-arg]
    client.daemon.runner.notify()
    return await client.wait_for_jobs(timeout=120)


async def test_a_stack_removed_behind_the_daemons_back_is_reaped_once(
    make_client: MakeClient, pulumi_env: PulumiEnvironment, logs: LogCapture
) -> None:
    @playbook(max_age=100, project="rtgone", program=SLOW)
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Ups a one-resource stack."""
        await ctx.stack.set_config({"sleep_seconds": "0"})
        await ctx.stack.up()

    clock = FakeClock()
    client = await make_client([provision], clock=clock, reaper_interval=3600)
    await client.deliver(pd_event("incident.triggered", "QGONE"), "gone-t")
    [job] = await settle(client)
    assert job.status == JobStatus.SUCCEEDED, job.error

    rogue = PulumiOperations(pulumi_env)
    await rogue.start()
    await rogue.destroy(StackTarget("incident-QGONE", "rtgone", SLOW), remove=True)
    await rogue.close()
    assert backend_stacks(client, "rtgone") == set()

    clock.advance(101)
    [reap] = await client.daemon.reaper.run_once()
    jobs = {j.id: j for j in await settle(client)}
    assert jobs[reap].status == JobStatus.SUCCEEDED, jobs[reap].error
    record = await client.daemon.store.get_stack("rtgone", "incident-QGONE")
    assert record is not None and record.status == "destroyed"
    assert [e["stack"] for e in logs.events("stack.already_gone")] == ["incident-QGONE"]

    clock.advance(1000)
    assert await client.daemon.reaper.run_once(sweep=True) == []  # not again, ever
    assert "program" not in jobs[reap].params  # the runner takes the stack's own


async def test_a_stack_whose_first_up_failed_frees_its_cap_and_is_reaped(
    make_client: MakeClient, logs: LogCapture
) -> None:
    @playbook(project="rtfail", program=SLOW)
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Ups a one-resource stack; the program fails for a low-urgency incident."""
        assert ctx.incident is not None
        sleep = "0" if ctx.incident.urgency == "high" else "not a number"
        await ctx.stack.set_config({"sleep_seconds": sleep})
        await ctx.stack.up()

    client = await make_client([provision], max_live_stacks=1, reaper_interval=3600)
    await client.deliver(pd_event("incident.triggered", "QFAIL", urgency="low"), "fail-t")
    [failed] = await settle(client)
    assert failed.status == JobStatus.FAILED
    record = await client.daemon.store.get_stack("rtfail", "incident-QFAIL")
    assert record is not None and record.status == "failed"
    assert backend_stacks(client, "rtfail") == {"incident-QFAIL"}  # the partial stack
    assert logs.events("stack.failed")

    # It holds no cap slot: the one live stack allowed can still be made.
    await client.deliver(pd_event("incident.triggered", "QGOOD", urgency="high"), "good-t")
    jobs = await settle(client)
    assert jobs[-1].status == JobStatus.SUCCEEDED, jobs[-1].error

    [reap] = await client.daemon.reaper.run_once()
    assert await client.daemon.reaper.run_once() == []  # one pending reap per stack
    by_id = {j.id: j for j in await settle(client)}
    assert by_id[reap].status == JobStatus.SUCCEEDED, by_id[reap].error
    assert by_id[reap].stack == "incident-QFAIL"
    record = await client.daemon.store.get_stack("rtfail", "incident-QFAIL")
    assert record is not None and record.status == "destroyed"
    assert backend_stacks(client, "rtfail") == {"incident-QGOOD"}


async def test_a_failed_stack_can_be_provisioned_again(make_client: MakeClient) -> None:
    @playbook(project="rtagain", program=SLOW)
    @on("incident.triggered", "incident.acknowledged")
    async def provision(ctx: Context) -> None:
        """Fails on the trigger, works on the acknowledge."""
        sleep = "0" if ctx.event.type == "incident.acknowledged" else "not a number"
        await ctx.stack.set_config({"sleep_seconds": sleep})
        await ctx.stack.up()

    client = await make_client([provision], max_live_stacks=1, reaper_interval=3600)
    await client.deliver(pd_event("incident.triggered", "QAGAIN"), "again-t")
    await settle(client)
    await client.deliver(pd_event("incident.acknowledged", "QAGAIN"), "again-a")
    jobs = await settle(client)
    assert [j.status for j in jobs] == [JobStatus.FAILED, JobStatus.SUCCEEDED], jobs[-1].error
    record = await client.daemon.store.get_stack("rtagain", "incident-QAGAIN")
    assert record is not None and record.status == "live"
    assert await client.daemon.reaper.run_once() == []


async def test_a_job_cannot_choose_its_program_or_scratch_root(
    make_client: MakeClient, data_dir: Path, tmp_path: Path
) -> None:
    seen: list[tuple[dict[str, str], str]] = []

    @playbook(params=("request", "target_url"))
    @on("manual.inspect")
    async def inspect(ctx: Context) -> None:
        """Records what it was given."""
        assert isinstance(ctx.stack, JobStack)
        seen.append((dict(ctx.params), ctx.stack.target.program))

    client = await make_client([inspect], probe_url="http://probe.invalid/health")
    # A job as a compromised or buggy writer could have stored it: every parameter set.
    event = Event(
        id="forged",
        source="manual",
        type="manual.inspect",
        resource_type="manual",
        incident=Incident(id="QFORGED"),
    )
    params = {
        "request": "timezone",
        "target_url": "http://chosen.invalid/",
        "scratch_root": str(tmp_path),
        "program": "os:system",
        "undeclared": "x",
    }
    delivery = NewDelivery.of(event, id="forged", body=b"{}", received_at=0.0)
    job = NewJob("inspect", "burner", "incident-QFORGED", event, 1, params=params)
    await client.daemon.store.record_delivery(delivery, [job])
    [done] = await settle(client)
    assert done.status == JobStatus.SUCCEEDED, done.error
    [(given, program)] = seen
    assert given == {
        "request": "timezone",
        "target_url": "http://chosen.invalid/",  # declared: the job's
        "scratch_root": str(data_dir.resolve() / "scratch"),  # the operator's, always
    }
    assert program == inspect.program

    # Through the API, an undeclared parameter is refused by name.
    answer = await client.http.post(
        "/playbooks/inspect/run",
        headers=AUTH,
        json={"params": {"request": "location", "scratch_root": "/", "program": "os:system"}},
    )
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert "'program'" in error and "'scratch_root'" in error and "'request'" not in error
    ok = await client.http.post(
        "/playbooks/inspect/run?wait=60", headers=AUTH, json={"params": {"request": "location"}}
    )
    assert ok.status == 200 and (await ok.json())["status"] == "succeeded"
    assert seen[-1][0]["request"] == "location"
