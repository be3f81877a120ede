"""The daemon end to end: signed webhooks in, the built-in playbooks, the real pulumi CLI."""

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from playbooks.incident_lifecycle import RESOLVE_GRACE
from responder.store import JobStatus
from tests.helpers import API_TOKEN, Client, FakeClock, LogCapture, ProbeTarget, pd_event
from tests.openapi_answers import assert_documented

pytestmark = pytest.mark.pulumi

MakeClient = Callable[..., Awaitable[Client]]


def state_file(client: Client, stack: str) -> Path:
    data = client.daemon.settings.data_dir
    return data / "pulumi-state" / ".pulumi" / "stacks" / "burner" / f"{stack}.json"


async def test_incident_lifecycle(
    make_client: MakeClient, probe_target: ProbeTarget, logs: LogCapture
) -> None:
    clock = FakeClock()
    client = await make_client(probe_url=probe_target.url, clock=clock)
    stack = "incident-QLIFE1"

    triggered = pd_event("incident.triggered", "QLIFE1", title="checkout down")
    answers = [await client.deliver(triggered, "life-trigger") for _ in range(5)]
    assert [a.status for a in answers] == [202, 200, 200, 200, 200]
    [job] = await client.wait_for_jobs()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert state_file(client, stack).exists()
    record = await (await client.http.get(f"/jobs/{job.id}")).json()
    # The real CLI's job (steps, outputs, masked secrets) and stacks, as the OpenAPI document says.
    assert_documented("GET", "/jobs/{id}", 200, "application/json", record)
    for answer in answers:
        assert_documented(
            "POST", "/webhooks/pagerduty", answer.status, "application/json", await answer.json()
        )
    stacks = await client.http.get("/stacks")
    assert_documented("GET", "/stacks", stacks.status, stacks.content_type, await stacks.json())
    assert record["outputs"]["probe_status"] == 200
    assert record["outputs"]["scratch_access_key"] == "[secret]"
    assert [s["step"] for s in record["steps"]] == ["set_config", "up"]
    scratch = Path(record["outputs"]["scratch_dir"])
    assert json.loads((scratch / "context.json").read_text())["title"] == "checkout down"

    probe_target.status = 500
    assert (
        await client.deliver(pd_event("incident.acknowledged", "QLIFE1"), "life-ack")
    ).status == 202
    jobs = await client.wait_for_jobs()
    ack = await client.daemon.store.get_job(jobs[-1].id)
    assert ack is not None
    assert ack.status == JobStatus.SUCCEEDED, ack.error
    assert [s.step for s in ack.steps] == ["set_config", "refresh", "up"]
    assert ack.outputs is not None and ack.outputs["probe_status"] == 500
    assert json.loads((scratch / "context.json").read_text())["status"] == "acknowledged"

    assert (
        await client.deliver(pd_event("incident.resolved", "QLIFE1"), "life-resolve")
    ).status == 202
    jobs = await client.wait_for_jobs(settled=(JobStatus.SCHEDULED,))
    assert jobs[-1].status == JobStatus.SCHEDULED  # the resolve grace period
    assert state_file(client, stack).exists()
    clock.advance(RESOLVE_GRACE + 1)
    client.daemon.runner.notify()
    jobs = await client.wait_for_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 3
    assert not state_file(client, stack).exists()
    assert not scratch.exists()

    incident = await (await client.http.get("/incidents/QLIFE1")).json()
    assert_documented("GET", "/incidents/{id}", 200, "application/json", incident)
    assert [d["id"] for d in incident["deliveries"]] == ["life-trigger", "life-ack", "life-resolve"]
    assert incident["stacks"][0]["status"] == "destroyed"

    # One delivery followed by its id from receipt to the stack's outcome.
    followed = [line for line in logs.lines() if line.get("delivery_id") == "life-trigger"]
    names = [line["event"] for line in followed]
    for expected in (
        "delivery.received",
        "delivery.verified",
        "delivery.matched",
        "job.queued",
        "job.started",
        "job.step_started",
        "stack.step",
        "job.step_finished",
        "job.succeeded",
        "delivery.deduplicated",
    ):
        assert expected in names, expected
    assert (
        names.index("delivery.received") < names.index("job.queued") < names.index("job.succeeded")
    )
    up = next(line for line in followed if line["event"] == "stack.step" and line["step"] == "up")
    assert up["stack"] == stack and up["outcome"] == "succeeded" and up["job_id"] == job.id


async def test_ten_events_for_one_incident_run_one_at_a_time(
    make_client: MakeClient, probe_target: ProbeTarget
) -> None:
    client = await make_client(probe_url=probe_target.url, workers=4)
    assert (await client.deliver(pd_event("incident.triggered", "QBURST"), "burst-0")).status == 202
    kinds = [
        "incident.acknowledged",
        "incident.escalated",
        "incident.priority_updated",
        "incident.acknowledged",
        "incident.escalated",
        "incident.priority_updated",
        "incident.reopened",
        "incident.acknowledged",
        "incident.escalated",
    ]
    answers = await asyncio.gather(
        *(
            client.deliver(pd_event(kind, "QBURST"), f"burst-{i + 1}")
            for i, kind in enumerate(kinds)
        )
    )
    assert [a.status for a in answers] == [202] * 9
    jobs = await client.wait_for_jobs(timeout=400)
    assert len(jobs) == 10
    assert {j.status for j in jobs} <= {JobStatus.SUCCEEDED, JobStatus.COALESCED}
    ran = [await client.daemon.store.get_job(j.id) for j in jobs if j.status == JobStatus.SUCCEEDED]
    assert all(
        j is not None and j.attempts == 1 for j in ran
    )  # nothing hit a concurrent-update error
    intervals = sorted((j.started_at, j.finished_at) for j in ran if j is not None)
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert start is not None and end is not None and start >= end  # strictly one after another
    assert [j.id for j in ran if j is not None] == sorted(j.id for j in ran if j is not None)


async def test_manual_diagnostics_run_returns_outputs(make_client: MakeClient) -> None:
    client = await make_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    response = await client.http.post(
        "/playbooks/host_diagnostics/run?wait=120",
        headers=auth,
        json={"params": {"request": "timezone"}},
    )
    assert response.status == 200
    job = await response.json()
    assert job["status"] == "succeeded", job["error"]
    assert "utc_time" in job["outputs"]["timezone"]
    assert [s["step"] for s in job["steps"]] == ["set_config", "up", "export", "destroy"]
    assert not state_file(client, job["stack"]).exists()
