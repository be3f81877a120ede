"""Incident ↔ stack lifecycle with the real CLI: grace periods, TTLs, orphans, approvals, cancellation,
caps and the postmortem record. Time is a FakeClock the tests move; nothing sleeps for a deadline."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from responder.playbook import Context, Playbook, on, playbook
from responder.stacks import PulumiEnvironment, PulumiOperations, StackTarget
from responder.store import JobStatus
from tests.helpers import API_TOKEN, Client, FakeClock, LogCapture, ProbeTarget, pd_event

pytestmark = pytest.mark.pulumi

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def playbooks(
    *,
    grace: float = 60,
    idle: float | None = None,
    max_age: float | None = None,
    approve_destroy: bool = False,
    approve_changes: bool = False,
) -> list[Playbook]:
    @playbook(idle_ttl=idle, max_age=max_age, approve_changes=approve_changes)
    @on("incident.triggered", "incident.reopened", "incident.acknowledged")
    async def provision(ctx: Context) -> None:
        """Up the incident's stack; a high-urgency incident also gets a probe."""
        assert ctx.incident is not None
        probe = ctx.params["target_url"] if ctx.incident.urgency == "high" else ""
        await ctx.stack.set_config(
            {
                "incident_id": ctx.incident.id,
                "scratch_root": ctx.params["scratch_root"],
                "target_url": probe,
            }
        )
        await ctx.stack.up()

    @playbook(
        allow_destroy=True,
        delay=grace,
        cancel_on=("incident.reopened",),
        approve_destroy=approve_destroy,
    )
    @on("incident.resolved")
    async def teardown(ctx: Context) -> None:
        """Destroy the incident's stack."""
        await ctx.stack.destroy(remove=True)

    return [provision, teardown]


def backend_stacks(client: Client, project: str = "burner") -> set[str]:
    directory = client.daemon.settings.data_dir / "pulumi-state" / ".pulumi" / "stacks" / project
    return (
        {p.name.removesuffix(".json") for p in directory.glob("*.json")}
        if directory.exists()
        else set()
    )


async def trigger(client: Client, incident: str, **data: str) -> None:
    assert (
        await client.deliver(pd_event("incident.triggered", incident, **data), f"{incident}-t")
    ).status == 202
    jobs = await client.wait_for_jobs(incident_id=incident)
    assert jobs[-1].status == JobStatus.SUCCEEDED, jobs[-1].error


async def settle(client: Client, clock: FakeClock | None = None, advance: float = 0) -> list:  # type: ignore[type-arg]
    """The jobs once none is queued or running, nor (on the test's clock) scheduled and due."""
    if clock is not None:
        clock.advance(advance)
    while True:
        client.daemon.runner.notify()
        jobs = await client.wait_for_jobs(
            settled=(JobStatus.SCHEDULED, JobStatus.AWAITING_APPROVAL)
        )
        # A due job stays `scheduled` until a worker's claim moves it to the queue.
        if clock is None or not any(
            j.status == JobStatus.SCHEDULED and j.not_before <= clock() for j in jobs
        ):
            return jobs
        await asyncio.sleep(0.05)


async def test_reopen_inside_the_grace_period_keeps_the_stack(
    make_client: MakeClient, probe_target: ProbeTarget
) -> None:
    clock = FakeClock()
    client = await make_client(playbooks(grace=60), clock=clock, probe_url=probe_target.url)
    await trigger(client, "QREOPEN")
    await client.deliver(pd_event("incident.resolved", "QREOPEN"), "QREOPEN-r")
    jobs = await settle(client, clock, 30)
    assert jobs[-1].status == JobStatus.SCHEDULED
    await client.deliver(pd_event("incident.reopened", "QREOPEN"), "QREOPEN-o")
    jobs = await settle(client, clock, 60)  # well past the original destroy time
    by_event = {j.event_type: j for j in jobs}
    assert by_event["incident.resolved"].status == JobStatus.CANCELLED
    assert "incident.reopened" in (by_event["incident.resolved"].error or "")
    assert by_event["incident.reopened"].status == JobStatus.SUCCEEDED
    assert backend_stacks(client) == {"incident-QREOPEN"}


async def test_restart_during_the_grace_period_loses_nothing(
    make_client: MakeClient, data_dir: Path
) -> None:
    clock = FakeClock()
    client = await make_client(playbooks(grace=120), clock=clock)
    await trigger(client, "QGRACE")
    await client.deliver(pd_event("incident.resolved", "QGRACE"), "QGRACE-r")
    assert (await settle(client))[-1].status == JobStatus.SCHEDULED
    await client.http.close()

    clock.advance(121)
    again = await make_client(playbooks(grace=120), clock=clock)
    jobs = await settle(again, clock)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert backend_stacks(again) == set()
    incident = await (await again.http.get("/incidents/QGRACE")).json()
    [stack] = incident["stacks"]
    assert stack["status"] == "destroyed" and stack["outputs"]["scratch_dir"].endswith("QGRACE")
    export = json.loads(Path(stack["export_path"]).read_text())  # the postmortem record
    resources = export["deployment"]["resources"]
    assert any(r["type"].endswith("ScratchDirectory") for r in resources)
    scratch = next(r for r in resources if r["type"].endswith("ScratchDirectory"))
    assert "ciphertext" in json.dumps(scratch["outputs"]["access_key"])  # secrets stay encrypted


async def test_idle_ttl_destroys_and_activity_extends_it(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(playbooks(idle=100), clock=clock)
    await trigger(client, "QIDLE")
    clock.advance(60)
    await client.deliver(pd_event("incident.acknowledged", "QIDLE"), "QIDLE-a")  # activity
    await settle(client)
    clock.advance(60)
    assert await client.daemon.reaper.run_once() == []
    clock.advance(50)
    [reap] = await client.daemon.reaper.run_once()
    jobs = await settle(client)
    job = next(j for j in jobs if j.id == reap)
    assert job.status == JobStatus.SUCCEEDED and "idle_ttl" in job.params["reason"]
    assert backend_stacks(client) == set()


async def test_max_age_destroys_whatever_the_activity(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(playbooks(max_age=200, idle=1000), clock=clock)
    await trigger(client, "QOLD")
    for i in range(3):
        clock.advance(70)
        await client.deliver(pd_event("incident.acknowledged", "QOLD"), f"QOLD-a{i}")
        await settle(client)
    assert backend_stacks(client) == {"incident-QOLD"}
    [reap] = await client.daemon.reaper.run_once()
    job = next(j for j in await settle(client) if j.id == reap)
    assert job.status == JobStatus.SUCCEEDED and "max_age" in job.params["reason"]
    assert backend_stacks(client) == set()


async def test_orphan_sweep_destroys_a_stack_made_behind_our_back(
    make_client: MakeClient, pulumi_env: PulumiEnvironment, tmp_path: Path
) -> None:
    rogue = PulumiOperations(pulumi_env)
    await rogue.start()
    await rogue.up(StackTarget("rogue"), config={"scratch_root": str(tmp_path)})
    await rogue.close()

    client = await make_client(playbooks())
    await trigger(client, "QOWNED")
    listing = await (await client.http.get("/stacks")).json()
    by_name = {s["stack"]: s for s in listing["stacks"]}
    assert by_name["rogue"]["status"] == "unknown to the store"
    owned = by_name["incident-QOWNED"]
    assert owned["in_backend"] and owned["status"] == "live" and owned["incident_id"] == "QOWNED"
    assert owned["playbook"] == "provision" and owned["age_seconds"] >= 0

    queued = await client.daemon.reaper.run_once(sweep=True)
    assert len(queued) == 1
    jobs = await settle(client)
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs)
    assert backend_stacks(client) == {"incident-QOWNED"}


async def test_destroy_approval_approve_runs_reject_keeps(
    make_client: MakeClient, data_dir: Path
) -> None:
    client = await make_client(playbooks(grace=0, approve_destroy=True))
    for incident in ("QAPPROVE", "QREJECT"):
        await trigger(client, incident)
        await client.deliver(pd_event("incident.resolved", incident), f"{incident}-r")
    jobs = await settle(client)
    waiting = {j.incident_id: j for j in jobs if j.status == JobStatus.AWAITING_APPROVAL}
    assert set(waiting) == {"QAPPROVE", "QREJECT"}
    plan = (await (await client.http.get(f"/jobs/{waiting['QAPPROVE'].id}")).json())["plan"]
    assert plan["operation"] == "destroy" and {s["op"] for s in plan["steps"]} == {"delete"}
    assert backend_stacks(client) == {"incident-QAPPROVE", "incident-QREJECT"}

    assert (await client.http.post(f"/jobs/{waiting['QAPPROVE'].id}/approve")).status == 401
    await client.http.close()  # a restart while approvals wait loses neither
    client = await make_client(playbooks(grace=0, approve_destroy=True))

    approved = await client.http.post(f"/jobs/{waiting['QAPPROVE'].id}/approve", headers=AUTH)
    assert approved.status == 200
    rejected = await client.http.post(f"/jobs/{waiting['QREJECT'].id}/reject", headers=AUTH)
    assert rejected.status == 200 and (await rejected.json())["status"] == "rejected"
    again = await client.http.post(f"/jobs/{waiting['QREJECT'].id}/approve", headers=AUTH)
    assert again.status == 409
    jobs = await settle(client)
    final = {j.id: j for j in jobs}
    assert final[waiting["QAPPROVE"].id].status == JobStatus.SUCCEEDED
    assert final[waiting["QREJECT"].id].status == JobStatus.REJECTED
    assert backend_stacks(client) == {"incident-QREJECT"}


async def test_an_update_that_deletes_waits_while_create_only_proceeds(
    make_client: MakeClient, probe_target: ProbeTarget
) -> None:
    clock = FakeClock()
    client = await make_client(
        playbooks(approve_changes=True),
        clock=clock,
        probe_url=probe_target.url,
        approval_timeout=600,
    )
    await trigger(client, "QGATE", urgency="high")  # create-only: no approval needed
    await client.deliver(pd_event("incident.acknowledged", "QGATE", urgency="low"), "QGATE-a")
    jobs = await settle(client)
    gated = jobs[-1]
    assert gated.status == JobStatus.AWAITING_APPROVAL
    assert gated.plan is not None and {"op": "delete"} in [
        {"op": s["op"]} for s in gated.plan["steps"]
    ]
    assert any("HttpProbe" in s["urn"] for s in gated.plan["steps"] if s["op"] == "delete")
    assert (await client.http.post(f"/jobs/{gated.id}/approve", headers=AUTH)).status == 200
    jobs = await settle(client)
    done = await client.daemon.store.get_job(gated.id)
    assert done is not None
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert [s.step for s in done.steps][-2:] == ["preview", "up"]
    assert "probe_status" not in (done.outputs or {})

    # An unanswered approval times out into a rejection.
    await client.deliver(pd_event("incident.acknowledged", "QGATE", urgency="high"), "QGATE-a2")
    await settle(client)
    await client.deliver(pd_event("incident.acknowledged", "QGATE", urgency="low"), "QGATE-a3")
    late = (await settle(client))[-1]
    assert late.status == JobStatus.AWAITING_APPROVAL
    clock.advance(601)
    await client.daemon.reaper.run_once()
    assert (await client.daemon.store.get_job(late.id)).status == JobStatus.REJECTED  # type: ignore[union-attr]


async def test_cancel_a_running_up(
    make_client: MakeClient, data_dir: Path, logs: LogCapture
) -> None:
    @playbook(project="slowcancel", program="tests.programs.slow:pulumi_program")
    @on("incident.triggered", "incident.acknowledged")
    async def slow(ctx: Context) -> None:
        """Sleeps 60 s on trigger, not at all on acknowledge."""
        await ctx.stack.set_config(
            {"sleep_seconds": "60" if ctx.event.type == "incident.triggered" else "0"}
        )
        await ctx.stack.up()

    client = await make_client([slow])
    await client.deliver(pd_event("incident.triggered", "QCANCEL"), "QCANCEL-t")
    job_id = 1
    deadline = asyncio.get_running_loop().time() + 120
    while not any(
        e.get("op") == "create" and "Slow" in str(e.get("urn"))
        for e in logs.events("pulumi.engine")
    ):  # wait until `up` is creating the slow resource
        assert asyncio.get_running_loop().time() < deadline, "the slow resource never started"
        await asyncio.sleep(0.1)
    response = await client.http.post(f"/jobs/{job_id}/cancel", headers=AUTH)
    assert response.status == 202
    [job] = await client.wait_for_jobs()
    assert job.status == JobStatus.CANCELLED
    locks = data_dir / "pulumi-state" / ".pulumi" / "locks"
    assert list(locks.rglob("*.json")) == []
    await client.deliver(pd_event("incident.acknowledged", "QCANCEL"), "QCANCEL-a")
    jobs = await client.wait_for_jobs()
    assert jobs[-1].status == JobStatus.SUCCEEDED, jobs[-1].error
    assert (
        await client.http.post("/jobs/1/cancel", headers=AUTH)
    ).status == 200  # already cancelled


async def test_cancel_a_queued_job(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(playbooks(grace=60), clock=clock)
    await trigger(client, "QQUEUED")
    await client.deliver(pd_event("incident.resolved", "QQUEUED"), "QQUEUED-r")
    scheduled = (await settle(client))[-1]
    response = await client.http.post(f"/jobs/{scheduled.id}/cancel", headers=AUTH)
    assert response.status == 200 and (await response.json())["status"] == "cancelled"
    await settle(client, clock, 61)
    assert backend_stacks(client) == {"incident-QQUEUED"}


async def test_cap_on_live_stacks_refuses_the_third(make_client: MakeClient) -> None:
    client = await make_client(playbooks(), max_live_stacks=2)
    for incident in ("QCAP1", "QCAP2", "QCAP3"):
        await client.deliver(pd_event("incident.triggered", incident), f"{incident}-t")
    jobs = await client.wait_for_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED, JobStatus.REFUSED]
    assert "max_live_stacks=2" in (jobs[2].error or "")
    record = await (await client.http.get(f"/jobs/{jobs[2].id}")).json()
    assert record["status"] == "refused" and "max_live_stacks=2" in record["error"]
    assert backend_stacks(client) == {"incident-QCAP1", "incident-QCAP2"}


async def test_cap_per_service(make_client: MakeClient) -> None:
    client = await make_client(playbooks(), max_stacks_per_service=1)
    await client.deliver(pd_event("incident.triggered", "QSVC1"), "QSVC1-t")
    await client.deliver(pd_event("incident.triggered", "QSVC2"), "QSVC2-t")
    other = {"id": "PO7HER1", "type": "service_reference", "summary": "billing (prod)"}
    await client.deliver(pd_event("incident.triggered", "QSVC3", service=other), "QSVC3-t")
    jobs = await client.wait_for_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.REFUSED, JobStatus.SUCCEEDED]
    assert "max_stacks_per_service=1" in (jobs[1].error or "")
