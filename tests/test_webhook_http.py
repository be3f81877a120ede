"""Every answer of the PagerDuty endpoint and the API, through the real HTTP interface.

The playbook here only records its calls (no Pulumi), so these tests exercise intake, the store and
the runner quickly; the end-to-end tests run the built-in playbooks with the real CLI.
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from responder.playbook import Context, Playbook, on, playbook
from responder.store import JobStatus
from responder.store.limits import MAX_KEY_BYTES
from tests.helpers import (
    API_TOKEN,
    SECRET_A,
    SECRET_B,
    Client,
    LogCapture,
    fixture_bytes,
    pd_event,
    sign,
)

MakeClient = Callable[..., Awaitable[Client]]


def recording_playbooks(calls: list[Context]) -> list[Playbook]:
    @playbook(params=("request",))
    @on("incident.triggered", "incident.acknowledged")
    async def record(ctx: Context) -> None:
        """Remember the context."""
        calls.append(ctx)

    return [record]


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(recording_playbooks([]))


async def test_signed_delivery_is_accepted_and_runs(make_client: MakeClient) -> None:
    calls: list[Context] = []
    client = await make_client(recording_playbooks(calls))
    body = fixture_bytes("pd_v3_incident_triggered.json")
    response = await client.deliver(body, "wh-1")
    assert response.status == 202
    answer = await response.json()
    assert answer["event_id"] == "01JBQ4Z7N3T8X2KM5RVWD9HCFA"
    assert answer["delivery_id"] == "wh-1"
    assert len(answer["jobs"]) == 1
    jobs = await client.wait_for_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED]
    assert calls[0].incident is not None and calls[0].incident.id == "Q1X7KD4R9PVM2T"
    assert calls[0].stack.name == "incident-Q1X7KD4R9PVM2T"

    job = await (await client.http.get(f"/jobs/{answer['jobs'][0]}")).json()
    assert (
        job["status"] == "succeeded"
        and job["playbook"] == "record"
        and job["delivery_id"] == "wh-1"
    )


async def test_rotation_header_with_two_signatures(make_client: MakeClient) -> None:
    client = await make_client(recording_playbooks([]), pagerduty_secrets=(SECRET_B,))
    body = fixture_bytes("pd_v3_incident_triggered.json")
    rotation = {"X-PagerDuty-Signature": sign(body, SECRET_A, SECRET_B)}
    response = await client.deliver(body, "rot-1", headers=rotation)
    assert response.status == 202


async def test_redeliveries_create_nothing(client: Client) -> None:
    body = fixture_bytes("pd_v3_incident_triggered.json")
    first = await client.deliver(body, "dup-1")
    assert first.status == 202
    for _ in range(4):
        again = await client.deliver(body, "dup-1")
        assert again.status == 200
        assert (await again.json()) == {
            "status": "duplicate",
            "delivery_id": "dup-1",
            "event_id": "01JBQ4Z7N3T8X2KM5RVWD9HCFA",
            "jobs": [],
        }
    assert len(await client.daemon.store.list_jobs()) == 1


async def test_without_webhook_id_the_event_id_deduplicates(client: Client) -> None:
    body = fixture_bytes("pd_v3_incident_triggered.json")
    assert (await client.deliver(body)).status == 202
    assert (await client.deliver(body)).status == 200
    assert len(await client.daemon.store.list_jobs()) == 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-PagerDuty-Signature": ""}, "missing signature"),
        ({"X-PagerDuty-Signature": "v1=" + "0" * 64}, "signature does not match"),
        ({"X-PagerDuty-Signature": sign(b"other body", SECRET_A)}, "signature does not match"),
    ],
)
async def test_unsigned_or_wrongly_signed_is_401_and_stores_nothing(
    client: Client, logs: LogCapture, headers: dict[str, str], reason: str
) -> None:
    response = await client.deliver(
        fixture_bytes("pd_v3_incident_triggered.json"), "bad-1", headers=headers
    )
    assert response.status == 401
    assert reason in (await response.json())["error"]
    assert await client.store.delivery_ids() == set()
    assert any(line["reason"] == reason for line in logs.events("delivery.rejected"))


async def test_signed_with_an_unknown_secret_is_401(client: Client) -> None:
    response = await client.deliver(
        fixture_bytes("pd_v3_incident_triggered.json"), "x", secret=SECRET_B
    )
    assert response.status == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"messages": [{}]}', "not a PagerDuty V3 webhook"),
        (b'{"event": {"id": "e"}}', "missing"),
    ],
)
async def test_malformed_bodies_are_400_with_a_json_error(
    client: Client, body: bytes, message: str
) -> None:
    response = await client.deliver(body, "m-1")
    assert response.status == 400
    answer = await response.json()
    assert message in answer["error"] and answer["status"] == 400
    assert await client.store.delivery_ids() == set()


TOO_LONG = "x" * (MAX_KEY_BYTES + 1)


@pytest.mark.parametrize(
    ("sent", "name"),
    [
        ({"event_id": TOO_LONG}, "event id"),
        ({"incident_id": TOO_LONG, "event_id": "evt-short"}, "incident id"),
    ],
)
async def test_an_id_too_long_to_store_is_400_and_stores_nothing(
    client: Client, logs: LogCapture, sent: dict[str, str], name: str
) -> None:
    """A signed delivery within the body limit whose event or incident id is too long to index:
    refused with a clear error naming it, not a 503 (which the sender would retry forever)."""
    response = await client.deliver(pd_event("incident.triggered", **sent), "long-1")
    assert response.status == 400
    answer = await response.json()
    assert answer["error"].endswith(f"the {name} is longer than {MAX_KEY_BYTES} bytes")
    assert await client.store.delivery_ids() == set()
    [rejected] = logs.events(
        "delivery.rejected"
    )  # a delivery's refusal, as the log's readers count
    assert str(rejected["reason"]).endswith("bytes") and not logs.events("request.rejected")
    assert (await client.deliver(pd_event("incident.triggered"), "short-1")).status == 202


async def test_oversized_body_is_413(make_client: MakeClient) -> None:
    client = await make_client(recording_playbooks([]), max_body_bytes=4096)
    body = pd_event("incident.triggered", title="x" * 5000)
    response = await client.deliver(body, "big-1")
    assert response.status == 413
    assert (await response.json())["status"] == 413
    assert await client.store.delivery_ids() == set()


async def test_oversized_chunked_body_is_413(make_client: MakeClient) -> None:
    client = await make_client(recording_playbooks([]), max_body_bytes=4096)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = await client.http.post(
        "/webhooks/pagerduty", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413


async def test_wrong_method_is_405_and_wrong_content_type_is_415(client: Client) -> None:
    response = await client.http.get("/webhooks/pagerduty")
    assert response.status == 405
    assert (await response.json())["status"] == 405
    assert "POST" in response.headers["Allow"]
    body = fixture_bytes("pd_v3_incident_triggered.json")
    response = await client.deliver(body, "ct-1", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert "application/json" in (await response.json())["error"]


async def test_ping_and_unknown_events_are_accepted_and_recorded(
    client: Client, logs: LogCapture
) -> None:
    ping = await client.deliver(fixture_bytes("pd_v3_pagey_ping.json"), "ping-1")
    assert ping.status == 202 and (await ping.json())["status"] == "ping"
    assert logs.events("delivery.ping")
    unknown = json.loads(fixture_bytes("pd_v3_incident_triggered.json"))
    unknown["event"].update(id="u1", event_type="service.teleported", resource_type="teleporter")
    response = await client.deliver(json.dumps(unknown).encode(), "unk-1")
    assert response.status == 202
    assert (await response.json()) == {
        "status": "ignored",
        "delivery_id": "unk-1",
        "event_id": "u1",
        "jobs": [],
    }
    assert await client.store.delivery_ids() == {"ping-1", "unk-1"}


async def test_store_outage_is_503(client: Client) -> None:
    await client.daemon.store.close()
    response = await client.deliver(fixture_bytes("pd_v3_incident_triggered.json"), "down-1")
    assert response.status == 503
    assert response.headers["Retry-After"]
    ready = await client.http.get("/readyz")
    assert ready.status == 503


async def test_unknown_path_is_a_json_404(client: Client) -> None:
    response = await client.http.get("/nope")
    assert response.status == 404 and (await response.json())["status"] == 404


@pytest.mark.pulumi  # readiness reports the real CLI's version
async def test_health_root_and_readiness(client: Client) -> None:
    assert (await (await client.http.get("/")).json()) == {"response": "OK"}
    assert (await client.http.get("/healthz")).status == 200
    ready = await client.http.get("/readyz")
    assert ready.status == 200
    checks = (await ready.json())["checks"]
    assert checks["pulumi"].startswith("ok (v3.")


async def test_no_playbooks_is_not_ready(make_client: MakeClient) -> None:
    client = await make_client([])
    assert (await client.http.get("/readyz")).status == 503


async def test_jobs_listing_filters_and_paginates(client: Client) -> None:
    for i in range(3):
        await client.deliver(pd_event("incident.triggered", f"QPAGE{i}"), f"page-{i}")
    await client.wait_for_jobs()
    page = await (await client.http.get("/jobs?limit=2")).json()
    assert [j["incident_id"] for j in page["jobs"]] == ["QPAGE0", "QPAGE1"] and page[
        "next_offset"
    ] == 2
    rest = await (await client.http.get("/jobs?limit=2&offset=2")).json()
    assert [j["incident_id"] for j in rest["jobs"]] == ["QPAGE2"] and rest["next_offset"] is None
    only = await (await client.http.get("/jobs?incident=QPAGE1&status=succeeded")).json()
    assert [j["incident_id"] for j in only["jobs"]] == ["QPAGE1"]
    assert (await client.http.get("/jobs?status=bogus")).status == 400
    assert (await client.http.get("/jobs?limit=x")).status == 400
    assert (await client.http.get("/jobs/999")).status == 404
    assert (await client.http.get("/jobs/abc")).status == 400
    incident = await (await client.http.get("/incidents/QPAGE1")).json()
    assert [d["id"] for d in incident["deliveries"]] == ["page-1"] and len(incident["jobs"]) == 1
    assert (await client.http.get("/incidents/NOPE")).status == 404


async def test_manual_run_needs_the_bearer_token(client: Client) -> None:
    response = await client.http.post("/playbooks/record/run")
    assert response.status == 401 and "Bearer" in response.headers["WWW-Authenticate"]
    wrong = await client.http.post(
        "/playbooks/record/run", headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status == 401
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert (await client.http.post("/playbooks/missing/run", headers=auth)).status == 404
    assert (
        await client.http.post("/playbooks/record/run", headers=auth, data=b"[1]")
    ).status == 400
    ok = await client.http.post(
        "/playbooks/record/run?wait=30", headers=auth, json={"params": {"request": "timezone"}}
    )
    assert ok.status == 200
    assert (await ok.json())["status"] == "succeeded"


async def test_secrets_never_reach_logs_or_answers(client: Client, logs: LogCapture) -> None:
    body = fixture_bytes("pd_v3_incident_triggered.json")
    responses = [
        await client.deliver(body, "s-1"),
        await client.deliver(body, "s-2", secret=SECRET_B),
    ]
    texts = [await r.text() for r in responses]
    texts.append(await (await client.http.post("/playbooks/record/run")).text())
    for secret in (SECRET_A, API_TOKEN):
        assert secret not in logs.text
        assert all(secret not in t for t in texts)
