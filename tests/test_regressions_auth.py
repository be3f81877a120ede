"""Cancel, approve and reject need the bearer token, checked before anything else is looked at.

No Pulumi operation runs here: the jobs are a scheduled one, a running one that blocks on an event,
and one that submits a plan for approval from its playbook.
"""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from responder.outcome import AwaitingApproval
from responder.playbook import Context, on, playbook
from responder.store import Job, JobStatus
from tests.helpers import API_TOKEN, Client, pd_event

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-token-0123456789"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Basic {API_TOKEN}"},
    {"Authorization": API_TOKEN},
    {"Authorization": f"Bearer {API_TOKEN[:-1]}"},
]


async def job(client: Client, job_id: int) -> Job:
    found = await client.daemon.store.get_job(job_id)
    assert found is not None
    return found


async def assert_unauthorized(client: Client, path: str) -> None:
    for headers in BAD_HEADERS:
        response = await client.http.post(path, headers=headers)
        assert response.status == 401, (headers, response.status)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["status"] == 401


@pytest.mark.parametrize("action", ["cancel", "approve", "reject"])
async def test_the_token_is_checked_before_the_job_is_looked_up(
    make_client: MakeClient, action: str
) -> None:
    client = await make_client([])
    await assert_unauthorized(client, f"/jobs/424242/{action}")
    assert (await client.http.post(f"/jobs/424242/{action}", headers=AUTH)).status == 404


async def test_cancel_without_the_token_cancels_nothing(make_client: MakeClient) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @on("incident.triggered")
    async def blocking(ctx: Context) -> None:
        """Runs until the test releases it."""
        started.set()
        await release.wait()

    @playbook(delay=600)
    @on("incident.resolved")
    async def later(ctx: Context) -> None:
        """Waits `scheduled` for ten minutes."""

    client = await make_client([blocking, later])
    [running] = (await (await client.deliver(pd_event("incident.triggered", "QRUN"), "r")).json())[
        "jobs"
    ]
    [scheduled] = (
        await (await client.deliver(pd_event("incident.resolved", "QLATER"), "l")).json()
    )["jobs"]
    await asyncio.wait_for(started.wait(), 30)

    await assert_unauthorized(client, f"/jobs/{running}/cancel")
    await assert_unauthorized(client, f"/jobs/{scheduled}/cancel")
    assert (await job(client, running)).status == JobStatus.RUNNING
    assert not (await job(client, running)).cancel_requested
    assert (await job(client, scheduled)).status == JobStatus.SCHEDULED

    release.set()
    [done] = await client.wait_for_jobs(incident_id="QRUN")
    assert done.status == JobStatus.SUCCEEDED  # the unauthorized cancels did not reach it
    response = await client.http.post(f"/jobs/{scheduled}/cancel", headers=AUTH)
    assert response.status == 200 and (await response.json())["status"] == "cancelled"


async def test_approve_and_reject_without_the_token_decide_nothing(
    make_client: MakeClient,
) -> None:
    runs: list[str] = []

    @on("incident.triggered")
    async def gated(ctx: Context) -> None:
        """Submits its plan for approval on the first run; goes ahead once approved."""
        runs.append(ctx.event.incident_id)
        if runs.count(ctx.event.incident_id) == 1:
            raise AwaitingApproval({"operation": "destroy", "steps": []})

    client = await make_client([gated])
    for incident in ("QYES", "QNO"):
        await client.deliver(pd_event("incident.triggered", incident), incident)
    jobs = await client.wait_for_jobs(settled=(JobStatus.AWAITING_APPROVAL,))
    waiting = {j.incident_id: j.id for j in jobs}
    assert {j.status for j in jobs} == {JobStatus.AWAITING_APPROVAL}

    for job_id in waiting.values():
        for decision in ("approve", "reject"):
            await assert_unauthorized(client, f"/jobs/{job_id}/{decision}")
    for job_id in waiting.values():
        assert (await job(client, job_id)).status == JobStatus.AWAITING_APPROVAL
    assert sorted(runs) == ["QNO", "QYES"]  # nothing ran again

    assert (await client.http.post(f"/jobs/{waiting['QYES']}/approve", headers=AUTH)).status == 200
    assert (await client.http.post(f"/jobs/{waiting['QNO']}/reject", headers=AUTH)).status == 200
    final = {j.incident_id: j.status for j in await client.wait_for_jobs()}
    assert final == {"QYES": JobStatus.SUCCEEDED, "QNO": JobStatus.REJECTED}
