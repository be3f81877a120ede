"""`POST /v2/enqueue`: PagerDuty Events API v2 answers, deduplication and normalisation."""

import json
from collections.abc import Awaitable, Callable

import pytest

from responder.playbook import Context, Playbook, on
from responder.sources import events_v2
from responder.store import JobStatus
from tests.helpers import Client, LogCapture, fixture_bytes

MakeClient = Callable[..., Awaitable[Client]]
KEY = "0123456789abcdef0123456789abcdef"


def recorder(calls: list[Context]) -> list[Playbook]:
    @on("incident.*", source="events_v2")
    async def record(ctx: Context) -> None:
        """Remember the context."""
        calls.append(ctx)

    @on("incident.triggered", severity="crit*", labels={"component": "checkout-*"})
    async def checkout_pages(ctx: Context) -> None:
        """Fires on critical checkout alerts only."""

    return [record, checkout_pages]


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(recorder([]), events_v2_routing_keys=(KEY,))


def event(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = json.loads(fixture_bytes("events_v2_trigger.json"))
    document["routing_key"] = KEY
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


async def enqueue(client: Client, document: object) -> tuple[int, dict[str, object]]:
    response = await client.http.post("/v2/enqueue", json=document)
    return response.status, await response.json()


async def test_trigger_acknowledge_resolve(make_client: MakeClient) -> None:
    calls: list[Context] = []
    client = await make_client(recorder(calls), events_v2_routing_keys=(KEY,))
    status, answer = await enqueue(client, event())
    assert status == 202
    assert answer == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": event()["dedup_key"],
    }
    for action in ("acknowledge", "resolve"):
        status, _ = await enqueue(client, event(event_action=action, payload=None))
        assert status == 202
    jobs = await client.wait_for_jobs()
    assert [(j.playbook, j.event_type) for j in jobs] == [
        ("record", "incident.triggered"),
        ("checkout_pages", "incident.triggered"),
        ("record", "incident.acknowledged"),
        ("record", "incident.resolved"),
    ]
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs)
    incident = calls[0].incident
    assert incident is not None
    assert incident.id == events_v2.incident_id(KEY, str(event()["dedup_key"]))
    assert KEY not in incident.id  # the integration key is a secret: it names nothing
    assert incident.severity == "critical" and incident.urgency == "high"
    assert incident.incident_key == event()["dedup_key"]
    assert (
        incident.labels["component"] == "checkout-api" and incident.labels["region"] == "eu-west-1"
    )
    assert len({c.stack.name for c in calls}) == 1  # one incident, one stack


async def test_trigger_without_dedup_key_gets_one(client: Client) -> None:
    status, answer = await enqueue(client, event(dedup_key=None))
    assert status == 202 and len(str(answer["dedup_key"])) == 32


async def test_repeats_create_nothing(client: Client, logs: LogCapture) -> None:
    first = event()
    assert (await enqueue(client, first))[0] == 202
    assert (await enqueue(client, first))[0] == 202  # identical body: a redelivery
    repeat = event(payload={**first["payload"], "summary": "still broken"})  # type: ignore[dict-item]
    assert (await enqueue(client, repeat))[0] == 202  # same dedup_key while open: deduplicated
    jobs = await client.wait_for_jobs()
    assert len([j for j in jobs if j.playbook == "record"]) == 1
    reasons = [line.get("reason") for line in logs.events("delivery.deduplicated")]
    assert "delivery id already recorded" in reasons and "incident already open" in reasons


async def test_updates_for_unknown_incidents_are_dropped(client: Client) -> None:
    status, _ = await enqueue(
        client, event(event_action="resolve", dedup_key="never-triggered", payload=None)
    )
    assert status == 202
    assert await client.daemon.store.list_jobs() == []


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (event(routing_key=None), "'routing_key' is missing or blank"),
        (
            event(routing_key="short"),
            "Length of 'routing_key' is incorrect (should be 32 characters)",
        ),
        (event(routing_key="0123456789abcdef0123456789abcde!"), "cannot contain non-alphanumeric"),
        (event(event_action="explode"), "'event_action' is invalid"),
        (
            event(event_action="acknowledge", dedup_key=None),
            "'dedup_key' is required for event_action 'acknowledge'",
        ),
        (event(dedup_key="x" * 256), "'dedup_key' must be a non-empty string of at most 255"),
        (event(payload=None), "'payload' is missing or not an object"),
        (
            event(payload={"summary": "s" * 1025, "source": "db", "severity": "error"}),
            "'payload.summary' is too long",
        ),
        (
            event(payload={"summary": "x", "source": "db", "severity": "catastrophic"}),
            "'payload.severity' is invalid",
        ),
        (
            event(payload={"summary": "x", "severity": "info"}),
            "'payload.source' is missing or blank",
        ),
        (
            event(
                payload={
                    "summary": "x",
                    "source": "db",
                    "severity": "info",
                    "timestamp": "yesterday",
                }
            ),
            "'payload.timestamp' is not a valid ISO 8601",
        ),
        (event(links=[{"text": "no href"}]), "'links[0].href' is missing"),
        (event(images=[{"href": "x"}]), "'images[0].src' is missing"),
        ([1, 2], "Event must be a JSON object"),
    ],
)
async def test_invalid_events_name_each_bad_field(
    client: Client, document: object, error: str
) -> None:
    status, answer = await enqueue(client, document)
    assert status == 400
    assert answer["status"] == "invalid event" and answer["message"] == "Event object is invalid"
    assert any(error in e for e in answer["errors"]), answer["errors"]  # type: ignore[attr-defined]
    assert await client.store.delivery_ids() == set()


async def test_several_errors_are_reported_together(client: Client) -> None:
    status, answer = await enqueue(client, {"routing_key": "short", "event_action": "nope"})
    assert status == 400 and len(answer["errors"]) == 2  # type: ignore[arg-type]


async def test_malformed_json_unknown_key_oversized_and_wrong_type(make_client: MakeClient) -> None:
    client = await make_client(recorder([]), events_v2_routing_keys=(KEY,), max_body_bytes=2048)
    response = await client.http.post(
        "/v2/enqueue", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400 and "Invalid JSON" in (await response.json())["errors"][0]
    status, answer = await enqueue(client, event(routing_key="f" * 32))
    assert status == 401 and answer["status"] == "invalid event"
    big = event(
        payload={
            "summary": "x",
            "source": "db",
            "severity": "info",
            "custom_details": {"a": "b" * 4000},
        }
    )
    response = await client.http.post("/v2/enqueue", json=big)
    assert response.status == 413
    response = await client.http.post(
        "/v2/enqueue", data=b"routing_key=x", headers={"Content-Type": "text/plain"}
    )
    assert response.status == 400
    assert (await client.http.get("/v2/enqueue")).status == 405
    assert await client.store.delivery_ids() == set()
