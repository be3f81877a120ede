"""An operator's decision is answered by what the store made of it: approving or rejecting a job that
is not awaiting approval (a queued one that never asked, one decided otherwise) is a 409 that
changes and logs nothing, and the same decision again is answered again, logged and counted once;
a timed-out approval a person decided first is left as they decided; a run's wait reports the job's
real status."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from responder.lifecycle import Reaper
from responder.outcome import AwaitingApproval
from responder.playbook import Context, on
from responder.store import JobStatus
from tests.fakes import FakeOperations
from tests.helpers import API_TOKEN, Client, FakeClock, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_a_decision_on_a_job_not_awaiting_approval_is_409_and_changes_nothing(
    make_client: MakeClient, logs: LogCapture
) -> None:
    release = asyncio.Event()
    runs: list[str] = []

    @on("incident.triggered", "incident.acknowledged")
    async def gated(ctx: Context) -> None:
        """The first run of QGATE asks for approval; QBUSY's first run holds its stack."""
        runs.append(ctx.event.incident_id)
        if ctx.event.incident_id == "QGATE" and runs.count("QGATE") == 1:
            raise AwaitingApproval({"operation": "destroy", "steps": []})
        if ctx.event.incident_id == "QBUSY" and runs.count("QBUSY") == 1:
            await release.wait()

    client = await make_client([gated])
    await client.deliver(pd_event("incident.triggered", "QGATE"), "gate")
    [waiting] = await client.wait_for_jobs(settled=(JobStatus.AWAITING_APPROVAL,))
    busy = await client.deliver(pd_event("incident.triggered", "QBUSY"), "busy-1")
    [running] = (await busy.json())["jobs"]
    behind = await client.deliver(pd_event("incident.acknowledged", "QBUSY"), "busy-2")
    [queued] = (await behind.json())["jobs"]
    assert (await client.store.get_job(queued)).status == JobStatus.QUEUED  # type: ignore[union-attr]

    for job_id in (queued, running):  # never asked for approval
        for decision in ("approve", "reject"):
            response = await client.http.post(f"/jobs/{job_id}/{decision}", headers=AUTH)
            assert response.status == 409, (job_id, decision, await response.text())
            assert "not awaiting approval" in (await response.json())["error"]
    rejected = await client.http.post(f"/jobs/{waiting.id}/reject", headers=AUTH)
    assert rejected.status == 200 and (await rejected.json())["status"] == "rejected"
    again = await client.http.post(f"/jobs/{waiting.id}/reject", headers=AUTH)  # a retry
    assert again.status == 200 and (await again.json())["status"] == "rejected"
    otherwise = await client.http.post(f"/jobs/{waiting.id}/approve", headers=AUTH)
    assert otherwise.status == 409
    assert (await client.http.post("/jobs/999999/approve", headers=AUTH)).status == 404

    assert [line["job_id"] for line in logs.events("job.rejected")] == [waiting.id]
    assert not logs.events("job.approved")
    release.set()
    final = {j.id: j.status for j in await client.wait_for_jobs()}
    assert final == {
        waiting.id: JobStatus.REJECTED,
        running: JobStatus.SUCCEEDED,
        queued: JobStatus.SUCCEEDED,
    }
    assert runs.count("QGATE") == 1  # the rejected job never ran again


async def test_an_approval_decided_by_a_person_is_not_timed_out_after_all(
    make_client: MakeClient, logs: LogCapture, fake_ops: FakeOperations, tmp_path: Path
) -> None:
    """The reaper lists approvals past their timeout, then rejects each; one a person approved in
    between stays approved, and no rejection is logged for it."""
    runs: list[str] = []

    @on("incident.triggered")
    async def gated(ctx: Context) -> None:
        """Asks for approval on its first run."""
        runs.append(ctx.event.incident_id)
        if len(runs) == 1:
            raise AwaitingApproval({"operation": "destroy", "steps": []})

    clock = FakeClock()
    client = await make_client([gated], clock=clock)
    await client.deliver(pd_event("incident.triggered", "QLATE"), "late")
    [waiting] = await client.wait_for_jobs(settled=(JobStatus.AWAITING_APPROVAL,))
    store = client.daemon.store
    listed = store.expired_approvals

    async def listed_then_approved(older_than: float) -> list[int]:
        found = await listed(older_than)
        approved = await client.http.post(f"/jobs/{waiting.id}/approve", headers=AUTH)
        assert approved.status == 200
        return found

    store.expired_approvals = listed_then_approved  # type: ignore[method-assign]
    reaper = Reaper(
        store, fake_ops, {}, notify=lambda: None, max_attempts=1, approval_timeout=60, clock=clock
    )
    clock.advance(61)
    await reaper.run_once()
    [done] = await client.wait_for_jobs()
    assert done.status == JobStatus.SUCCEEDED and runs == ["QLATE", "QLATE"]
    assert not logs.events("job.rejected")
    assert [line["job_id"] for line in logs.events("job.approved")] == [waiting.id]


async def test_a_runs_wait_reports_the_jobs_real_status(make_client: MakeClient) -> None:
    release = asyncio.Event()

    @on("incident.triggered")
    async def hold(ctx: Context) -> None:
        """Holds its stack until released."""
        await release.wait()

    client = await make_client([hold])
    await client.deliver(pd_event("incident.triggered", "QHELD"), "held")
    await client.wait_for_jobs(settled=(JobStatus.RUNNING,))
    # A run on the held stack waits behind the running job: queued, not running, after the wait.
    response = await client.http.post(
        "/playbooks/hold/run?wait=0.5", headers=AUTH, json={"incident_id": "QHELD"}
    )
    answer = await response.json()
    assert response.status == 202 and answer["status"] == "queued", answer
    assert answer["error"] == "still queued after the wait"
    release.set()
    await client.wait_for_jobs()
