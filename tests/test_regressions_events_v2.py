"""Events v2 `payload.severity`: required on trigger, optional on acknowledge/resolve, valid when given.

PagerDuty's Events API v2 requires `payload` (and so `payload.severity`) only for `trigger`;
acknowledge and resolve may omit it, and Alertmanager's resolve repeats the full payload with its
severity. A severity that is present must still be one of the four values on every action.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from responder.playbook import Context, Playbook, on
from responder.sources import events_v2
from responder.store import JobStatus
from tests.helpers import Client, fixture_bytes

MakeClient = Callable[..., Awaitable[Client]]
KEY = "0123456789abcdef0123456789abcdef"
SEVERITY_ERROR = "'payload.severity' is invalid"


def document(action: str = "trigger", **payload: object) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(fixture_bytes("events_v2_trigger.json"))
    body.update(routing_key=KEY, event_action=action)
    body["payload"] = {k: v for k, v in {**body["payload"], **payload}.items() if v is not None}
    return body


def parse(body: dict[str, Any]) -> events_v2.EnqueuedEvent:
    return events_v2.parse(json.dumps(body).encode())


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_an_invalid_severity_on_acknowledge_or_resolve_is_rejected(action: str) -> None:
    with pytest.raises(events_v2.InvalidEvent) as raised:
        parse(document(action, severity="fatal"))
    assert [e for e in raised.value.errors if SEVERITY_ERROR in e]


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_acknowledge_or_resolve_may_omit_the_severity_or_the_whole_payload(action: str) -> None:
    without_severity = parse(document(action, severity=None)).event
    assert without_severity.type == events_v2.ACTIONS[action]
    assert without_severity.incident is not None and without_severity.incident.severity == ""
    bare = document(action)
    del bare["payload"]
    assert parse(bare).event.type == events_v2.ACTIONS[action]


def test_a_valid_severity_on_resolve_is_kept() -> None:
    event = parse(document("resolve", severity="error")).event  # what Alertmanager sends
    assert event.incident is not None and event.incident.severity == "error"


def test_a_trigger_without_severity_is_rejected() -> None:
    with pytest.raises(events_v2.InvalidEvent) as raised:
        parse(document("trigger", severity=None))
    assert [e for e in raised.value.errors if SEVERITY_ERROR in e]


def recorder(calls: list[Context]) -> list[Playbook]:
    @on("incident.*", source="events_v2")
    async def record(ctx: Context) -> None:
        """Remember the context."""
        calls.append(ctx)

    return [record]


async def enqueue(client: Client, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.http.post("/v2/enqueue", json=body)
    return response.status, await response.json()


async def test_severity_rules_over_http(make_client: MakeClient) -> None:
    calls: list[Context] = []
    client = await make_client(recorder(calls), events_v2_routing_keys=(KEY,))

    status, answer = await enqueue(client, document("trigger", severity=None))
    assert status == 400 and any(SEVERITY_ERROR in e for e in answer["errors"]), answer
    assert await client.store.delivery_ids() == set()

    assert (await enqueue(client, document("trigger")))[0] == 202
    for action in ("acknowledge", "resolve"):
        status, answer = await enqueue(client, document(action, severity="sev1"))
        assert status == 400 and any(SEVERITY_ERROR in e for e in answer["errors"]), answer
    assert len(await client.store.delivery_ids()) == 1  # the rejected ones stored nothing

    assert (await enqueue(client, document("acknowledge", severity=None)))[0] == 202
    assert (await enqueue(client, document("resolve", severity="warning")))[0] == 202
    jobs = await client.wait_for_jobs()
    assert [(j.event_type, j.status) for j in jobs] == [
        ("incident.triggered", JobStatus.SUCCEEDED),
        ("incident.acknowledged", JobStatus.SUCCEEDED),
        ("incident.resolved", JobStatus.SUCCEEDED),
    ]
    severities = [c.incident.severity for c in calls if c.incident is not None]
    assert severities == ["critical", "", "warning"]
