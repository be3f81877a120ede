"""Notes from playbooks to local PagerDuty and Slack servers, through the daemon (fake stacks, fast):
the requests as the services document them, retries on 429/5xx/slow answers, giving up, refusals,
and nothing sent without settings."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from responder.playbook import Context, on
from responder.store import JobStatus
from tests.helpers import API_TOKEN, Client, LogCapture, pd_event
from tests.notes_servers import (
    PD_FROM,
    PD_TOKEN,
    PagerDuty,
    Scripted,
    Slack,
    pagerduty_settings,
    start_pagerduty,
    start_slack,
)
from tests.test_metrics import scrape, total

MakeClient = Callable[..., Awaitable[Client]]
NOTES = "responder_notes_total"


@on("incident.triggered")
async def noting(ctx: Context) -> None:
    """Notes twice; the second quotes a registered secret, which must arrive masked."""
    await ctx.note("Probe <ok> & done", fields={"probe_status": 200, "secret_output": "[secret]"})
    await ctx.note(f"leaked {API_TOKEN}?", fields={"token": API_TOKEN})


@on("incident.triggered")
async def failing(ctx: Context) -> None:
    """Notes why it fails, then fails."""
    await ctx.note("Provisioning failed: boom")
    raise RuntimeError("boom")


@pytest.fixture
async def pagerduty(aiohttp_server: AiohttpServer) -> PagerDuty:
    return await start_pagerduty(aiohttp_server)


@pytest.fixture
async def slack(aiohttp_server: AiohttpServer) -> Slack:
    return await start_slack(aiohttp_server)


async def settled_notes(client: Client, job_id: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The job's notes once every one is sent or failed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await (await client.http.get(f"/jobs/{job_id}")).json()
        notes: list[dict[str, Any]] = job["notes"]
        if notes and all(n["status"] in ("sent", "failed") for n in notes):
            return notes
        assert asyncio.get_running_loop().time() < deadline, f"notes not settled: {notes}"
        await asyncio.sleep(0.1)


async def one_job(client: Client, incident: str = "QNOTE1") -> int:
    assert (await client.deliver(pd_event("incident.triggered", incident))).status == 202
    [job] = await client.wait_for_jobs(timeout=30)
    return job.id


async def test_requests_are_what_pagerduty_and_slack_document(
    make_client: MakeClient, pagerduty: PagerDuty, slack: Slack
) -> None:
    client = await make_client(
        [noting],
        **pagerduty_settings(pagerduty),
        slack_webhook_url=slack.url,
        public_url="https://responder.example.com/",
    )
    job_id = await one_job(client)
    notes = await settled_notes(client, job_id)
    assert [(n["destination"], n["status"], n["attempts"]) for n in notes] == [
        ("pagerduty", "sent", 1),
        ("slack", "sent", 1),
    ] * 2
    assert pagerduty.problems == [] and slack.problems == []

    first, second = pagerduty.posts(201)
    assert first.path == "/incidents/QNOTE1/notes"
    assert first.headers["Authorization"] == f"Token token={PD_TOKEN}"
    assert first.headers["From"] == PD_FROM
    content = json.loads(first.body)["note"]["content"]
    assert content.startswith("Probe <ok> & done\n\nprobe_status: 200\nsecret_output: [secret]")
    assert f"Job page: https://responder.example.com/ui/jobs/{job_id}" in content
    assert "Playbook noting, job" in content and content.splitlines()[-1].startswith(
        "responder note "
    )
    masked = json.loads(second.body)["note"]["content"]
    assert API_TOKEN not in masked and "leaked [secret]?" in masked and "token: [secret]" in masked

    message = slack.messages[0]
    header, text, fields, context = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": message["text"].split(":")[0]},
    }
    assert (
        text["text"]["text"] == "Probe &lt;ok&gt; &amp; done"
    )  # mrkdwn control characters escaped
    assert [f["text"] for f in fields["fields"]] == [
        "*Playbook*\nnoting",
        "*Outcome*\nsucceeded",
        "*probe_status*\n200",
        "*secret_output*\n[secret]",
    ]
    assert (
        f"<https://responder.example.com/ui/jobs/{job_id}|Job {job_id}>"
        in context["elements"][0]["text"]
    )
    assert (
        ".pagerduty.com/incidents/Q1X7KD4R9PVM2T|Incident QNOTE1>" in context["elements"][0]["text"]
    )
    assert API_TOKEN not in json.dumps(slack.messages)


async def test_a_429_is_retried_after_retry_after_and_arrives_once(
    make_client: MakeClient, pagerduty: PagerDuty, logs: LogCapture
) -> None:
    pagerduty.script = [Scripted(429, {"Retry-After": "1"}), Scripted(429, {"Retry-After": "1"})]
    client = await make_client([failing], **pagerduty_settings(pagerduty))
    before = await scrape(client)
    job_id = await one_job(client)
    [note] = await settled_notes(client, job_id)
    assert (note["status"], note["attempts"]) == ("sent", 3)
    after = await scrape(client)
    for outcome, count in (("retrying", 2), ("sent", 1), ("failed", 0)):
        moved = total(after, NOTES, outcome=outcome) - total(before, NOTES, outcome=outcome)
        assert moved == count, outcome
    job = await client.daemon.store.get_job(job_id)
    assert job is not None and job.status == JobStatus.FAILED  # the playbook's own failure
    posts = pagerduty.posts()
    assert [p.status for p in posts] == [429, 429, 201]
    assert posts[1].at - posts[0].at >= 0.95 and posts[2].at - posts[1].at >= 0.95
    assert pagerduty.contents("QNOTE1") == [pagerduty.contents("QNOTE1")[0]]
    assert pagerduty.contents("QNOTE1")[0].startswith("Provisioning failed: boom")
    assert [line["delay_seconds"] for line in logs.events("notes.retrying")] == [1.0, 1.0]
    assert pagerduty.problems == []


async def test_a_service_failing_for_good_is_given_up_and_the_job_still_succeeds(
    make_client: MakeClient, pagerduty: PagerDuty, slack: Slack, logs: LogCapture
) -> None:
    pagerduty.always = Scripted(500, body='{"error": {"message": "Internal Server Error"}}')
    client = await make_client(
        [noting], **pagerduty_settings(pagerduty), slack_webhook_url=slack.url, note_give_up=2.5
    )
    job_id = await one_job(client)
    notes = await settled_notes(client, job_id)
    assert [(n["destination"], n["status"]) for n in notes] == [
        ("pagerduty", "failed"),
        ("slack", "sent"),
    ] * 2
    failed = notes[0]
    assert failed["attempts"] >= 2
    assert failed["last_error"].startswith("given up after")
    assert "HTTP 500" in failed["last_error"]
    job = await (await client.http.get(f"/jobs/{job_id}")).json()
    assert job["status"] == "succeeded" and job["error"] is None
    assert {line["destination"] for line in logs.events("notes.failed")} == {"pagerduty"}
    assert slack.url not in logs.text  # the webhook URL is a credential
    assert pagerduty.contents("QNOTE1") == []


async def test_a_slow_answer_is_retried_without_a_second_note(
    make_client: MakeClient, pagerduty: PagerDuty, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service took the note but answered after the client's timeout: the retry finds the
    note on the incident (by its key) and posts nothing more."""
    import aiohttp

    from responder.notes import service

    monkeypatch.setattr(service, "ATTEMPT_TIMEOUT", aiohttp.ClientTimeout(total=0.5))
    pagerduty.script = [Scripted(201, delay=1.5, take=True)]
    client = await make_client([failing], **pagerduty_settings(pagerduty))
    job_id = await one_job(client)
    [note] = await settled_notes(client, job_id)
    assert (note["status"], note["attempts"]) == ("sent", 2)
    assert len(pagerduty.contents("QNOTE1")) == 1
    assert [(r.method, r.status) for r in pagerduty.requests] == [("POST", 0), ("GET", 200)]


async def test_a_refused_note_fails_at_once(
    make_client: MakeClient, pagerduty: PagerDuty, slack: Slack
) -> None:
    slack.always = Scripted(404, body="channel_not_found")
    client = await make_client([failing], slack_webhook_url=slack.url)
    job_id = await one_job(client)
    [note] = await settled_notes(client, job_id)
    assert (note["destination"], note["status"], note["attempts"]) == ("slack", "failed", 1)
    assert note["last_error"] == "HTTP 404: channel_not_found"
    assert pagerduty.requests == []  # PagerDuty is not configured here


async def test_nothing_is_sent_without_settings(
    make_client: MakeClient, pagerduty: PagerDuty, slack: Slack, logs: LogCapture
) -> None:
    client = await make_client([noting])
    job_id = await one_job(client)
    job = await (await client.http.get(f"/jobs/{job_id}")).json()
    assert job["status"] == "succeeded" and job["notes"] == []
    assert logs.events("notes.disabled")
    await asyncio.sleep(0.3)
    assert pagerduty.requests == [] and slack.requests == []


async def test_events_v2_incidents_get_chat_notes_only(
    make_client: MakeClient, pagerduty: PagerDuty, slack: Slack
) -> None:
    client = await make_client(
        [noting], **pagerduty_settings(pagerduty), slack_webhook_url=slack.url
    )
    key = client.daemon.credentials.events_v2_routing_keys[0]
    body = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": "disk-full",
        "payload": {"summary": "Disk full", "source": "db-1", "severity": "critical"},
    }
    assert (await client.http.post("/v2/enqueue", json=body)).status == 202
    [job] = await client.wait_for_jobs(timeout=30)
    notes = await settled_notes(client, job.id)
    assert [(n["destination"], n["status"]) for n in notes] == [("slack", "sent")] * 2
    assert pagerduty.requests == []


@on("incident.triggered")
async def verbose(ctx: Context) -> None:
    """A note far over every service's limits: it must still be accepted, cut to fit."""
    await ctx.note("x<" * 50_000, fields={f"field{i}": "v&" * 5_000 for i in range(50)})


async def test_an_oversized_note_is_cut_to_each_service_s_limits(
    make_client: MakeClient, pagerduty: PagerDuty, slack: Slack
) -> None:
    client = await make_client(
        [verbose], **pagerduty_settings(pagerduty), slack_webhook_url=slack.url
    )
    job_id = await one_job(client)
    notes = await settled_notes(client, job_id)
    assert [n["status"] for n in notes] == ["sent", "sent"]
    assert pagerduty.problems == [] and slack.problems == []
    [content] = pagerduty.contents("QNOTE1")
    assert len(content) <= 25_000 and content.splitlines()[-1].startswith("responder note ")
    [message] = slack.messages
    assert len(message["blocks"]) <= 50


async def test_the_delivery_loop_survives_a_store_failure(
    make_client: MakeClient,
    pagerduty: PagerDuty,
    logs: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from responder.notes import delivery
    from responder.store import StoreUnavailable

    monkeypatch.setattr(delivery, "IDLE_POLL", 0.2)
    client = await make_client([failing], **pagerduty_settings(pagerduty))
    store = client.daemon.store
    claim = store.claim_notes
    failures = iter([StoreUnavailable("job store unavailable: disk I/O error")])

    async def flaky(now: float, limit: int, lease: float) -> Any:
        for failure in failures:
            raise failure
        return await claim(now, limit, lease)

    monkeypatch.setattr(store, "claim_notes", flaky)
    job_id = await one_job(client)
    [note] = await settled_notes(client, job_id)
    assert note["status"] == "sent"
    assert logs.events("notes.loop_error")
    assert len(pagerduty.contents("QNOTE1")) == 1


@on("incident.triggered")
async def guarded(ctx: Context) -> None:
    """Fails inside `failure_noted`, quoting a secret."""
    async with ctx.failure_noted("Probing"):
        raise RuntimeError(f"boom {API_TOKEN}")


async def test_a_failure_is_noted_masked_and_the_job_fails_as_before(
    make_client: MakeClient, pagerduty: PagerDuty
) -> None:
    client = await make_client([guarded], **pagerduty_settings(pagerduty))
    job_id = await one_job(client)
    [note] = await settled_notes(client, job_id)
    assert note["status"] == "sent"
    job = await (await client.http.get(f"/jobs/{job_id}")).json()
    assert job["status"] == "failed" and job["error"] == "RuntimeError: boom [secret]"
    [content] = pagerduty.contents("QNOTE1")
    assert content.startswith("Probing failed: RuntimeError: boom [secret]\n")
    assert "guarded, job 1: failed" in content
