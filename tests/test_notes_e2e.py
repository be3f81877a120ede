"""Notes end to end with the real pulumi CLI: the built-in playbooks write an incident's story
back to (local) PagerDuty and Slack: up, nothing for an acknowledge that changed nothing, the
probe failing, destroy."""

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from playbooks.incident_lifecycle import RESOLVE_GRACE
from responder.store import JobStatus
from tests.helpers import Client, FakeClock, LogCapture, ProbeTarget, pd_event
from tests.notes_servers import pagerduty_settings, start_pagerduty, start_slack

pytestmark = pytest.mark.pulumi

MakeClient = Callable[..., Awaitable[Client]]
HEX_TOKEN = re.compile(r"\b[0-9a-f]{32}\b")  # the shape of the scratch dir's secret access key


async def settled_notes(client: Client, job_id: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await (await client.http.get(f"/jobs/{job_id}")).json()
        notes: list[dict[str, Any]] = job["notes"]
        if all(n["status"] in ("sent", "failed") for n in notes):
            return notes
        assert asyncio.get_running_loop().time() < deadline, f"notes not settled: {notes}"
        await asyncio.sleep(0.1)


async def test_the_incident_gets_a_note_for_up_none_for_a_quiet_ack_and_one_for_destroy(
    make_client: MakeClient,
    aiohttp_server: AiohttpServer,
    probe_target: ProbeTarget,
    logs: LogCapture,
) -> None:
    pagerduty, slack = await start_pagerduty(aiohttp_server), await start_slack(aiohttp_server)
    clock = FakeClock()
    client = await make_client(
        probe_url=probe_target.url,
        clock=clock,
        **pagerduty_settings(pagerduty),
        slack_webhook_url=slack.url,
        public_url="https://responder.example.com",
    )
    incident = "QNOTES"

    assert (await client.deliver(pd_event("incident.triggered", incident))).status == 202
    [up] = await client.wait_for_jobs()
    assert up.status == JobStatus.SUCCEEDED, up.error
    notes = await settled_notes(client, up.id)
    assert [(n["destination"], n["status"]) for n in notes] == [
        ("pagerduty", "sent"),
        ("slack", "sent"),
    ]
    [note] = pagerduty.contents(incident)
    assert note.startswith("Diagnostics stack incident-QNOTES is up.\n")
    assert "probe_status: 200\n" in note and f"probe_url: {probe_target.url}\n" in note
    assert "scratch_access_key: [secret]\n" in note
    assert f"Job page: https://responder.example.com/ui/jobs/{up.id}" in note
    *body, key_line = note.splitlines()
    assert key_line.startswith("responder note ")
    assert not HEX_TOKEN.search("\n".join(body))  # no secret access key, masked or not
    assert logs.redactor.redact(note) == note  # no registered secret at all
    [message] = slack.messages
    assert "*probe_status*\n200" in [f["text"] for f in message["blocks"][2]["fields"]]
    assert not HEX_TOKEN.search(json.dumps(message))

    # Acknowledged, the probe answering as before: the refresh changes nothing worth a note.
    assert (await client.deliver(pd_event("incident.acknowledged", incident))).status == 202
    jobs = await client.wait_for_jobs()
    ack = await (await client.http.get(f"/jobs/{jobs[-1].id}")).json()
    assert ack["status"] == "succeeded" and ack["notes"] == []

    # Escalated while the probed service now fails: that is news.
    probe_target.status = 500
    assert (await client.deliver(pd_event("incident.escalated", incident))).status == 202
    jobs = await client.wait_for_jobs()
    assert [n["status"] for n in await settled_notes(client, jobs[-1].id)] == ["sent", "sent"]

    assert (await client.deliver(pd_event("incident.resolved", incident))).status == 202
    await client.wait_for_jobs(settled=(JobStatus.SCHEDULED,))
    clock.advance(RESOLVE_GRACE + 1)
    client.daemon.runner.notify()
    jobs = await client.wait_for_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 4
    notes = await settled_notes(client, jobs[-1].id)
    assert [(n["destination"], n["status"]) for n in notes] == [
        ("pagerduty", "sent"),
        ("slack", "sent"),
    ]
    *_, changed, destroyed = pagerduty.contents(incident)
    assert changed.startswith("Diagnostics stack incident-QNOTES changed.\n")
    assert "probe_status: 500\n" in changed
    assert destroyed.startswith("Diagnostics stack incident-QNOTES destroyed.\n")
    assert len(slack.messages) == 3
    assert len(pagerduty.posts()) == 3  # each note posted once
    assert pagerduty.problems == [] and slack.problems == []
