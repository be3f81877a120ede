"""PagerDuty V3 signature verification and envelope parsing, against the published test vectors."""

import json

import pytest

from responder.sources import InvalidDelivery, pagerduty
from tests.helpers import SECRET_A, SECRET_B, fixture_bytes

VECTORS = {
    "pd_v3_pagey_ping.json": (
        "44d88a69da33ab57fc2b77c41a6a937f80429c8d6b5078a2dba6c937a163f5f0",
        "1e81f8d4c7da16aec5b3c9eef0f92eb2f6f4e09eb3bd5ca2b13c6e868c78289c",
    ),
    "pd_v3_incident_triggered.json": (
        "65208a9e1a493b540bcbc6912a87c62b2c1d2233a79a55acfe41817500ce6018",
        "5f02076777a884a5ef4698976784016ee8e0b3f6fc7b78331471372b01a28959",
    ),
    "pd_v3_incident_resolved.json": (
        "4c0fc8eb8fe2fb8856d875e7dfe571e2fe66025292372e7269bce091af1b87fc",
        "2abb4df0585ffd2d43fd89b0022db6f913c4f83f2bb190669000fc9082aba2ed",
    ),
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_signatures_match_the_published_vectors(name: str) -> None:
    body = fixture_bytes(name)
    hex_a, hex_b = VECTORS[name]
    assert pagerduty.sign(body, SECRET_A) == f"v1={hex_a}"
    assert pagerduty.sign(body, SECRET_B) == f"v1={hex_b}"
    rotation = f"v1={hex_b},v1={hex_a}"
    assert pagerduty.verify_signature(body, rotation, [SECRET_A])
    assert pagerduty.verify_signature(body, rotation, [SECRET_B])
    assert pagerduty.verify_signature(body, f"v1={hex_a}", [SECRET_B, SECRET_A])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=",
        "v0=" + VECTORS["pd_v3_pagey_ping.json"][0],
        "v1=" + "0" * 64,
        "v1=zz",
        "garbage",
    ],
)
def test_bad_signatures_are_refused(header: str | None) -> None:
    assert not pagerduty.verify_signature(
        fixture_bytes("pd_v3_pagey_ping.json"), header, [SECRET_A]
    )


def test_a_changed_body_no_longer_verifies() -> None:
    body = fixture_bytes("pd_v3_incident_triggered.json")
    header = pagerduty.sign(body, SECRET_A)
    assert not pagerduty.verify_signature(body.replace(b"4187", b"4188"), header, [SECRET_A])
    assert not pagerduty.verify_signature(body, header, [])


def test_parse_incident_triggered() -> None:
    event = pagerduty.parse(fixture_bytes("pd_v3_incident_triggered.json"))
    assert (event.id, event.type, event.resource_type, event.source) == (
        "01JBQ4Z7N3T8X2KM5RVWD9HCFA",
        "incident.triggered",
        "incident",
        "pagerduty",
    )
    assert event.occurred_at == "2026-03-14T09:26:53.589Z"
    assert event.agent is not None and event.agent.type == "service_reference"
    incident = event.incident
    assert incident is not None
    assert incident.id == "Q1X7KD4R9PVM2T"
    assert incident.number == 4187
    assert incident.status == "triggered"
    assert incident.title.startswith("High 5xx error rate")
    assert incident.incident_key == "prod-eu1/checkout-api/HighErrorRate"
    assert incident.service is not None and incident.service.summary == "checkout-api (prod)"
    assert incident.service_names == ("PK3N8QZ", "checkout-api (prod)")
    assert [a.summary for a in incident.assignees] == ["Priya Raman"]
    assert incident.escalation_policy is not None
    assert incident.html_url.endswith("/incidents/Q1X7KD4R9PVM2T")


def test_parse_resolved_and_ping() -> None:
    resolved = pagerduty.parse(fixture_bytes("pd_v3_incident_resolved.json"))
    assert resolved.type == "incident.resolved"
    assert resolved.incident is not None and resolved.incident.assignees == ()
    assert resolved.client == {"name": "PagerDuty"}
    ping = pagerduty.parse(fixture_bytes("pd_v3_pagey_ping.json"))
    assert (ping.type, ping.resource_type, ping.incident) == ("pagey.ping", "pagey", None)


def test_annotated_event_refers_to_its_incident() -> None:
    body = json.dumps(
        {
            "event": {
                "id": "e1",
                "event_type": "incident.annotated",
                "resource_type": "incident",
                "occurred_at": "x",
                "agent": None,
                "client": None,
                "data": {
                    "type": "incident_note",
                    "id": "N1",
                    "content": "hi",
                    "trimmed": False,
                    "incident": {"id": "Q123", "type": "incident_reference", "summary": "db down"},
                },
            }
        }
    ).encode()
    event = pagerduty.parse(body)
    assert event.incident is not None and (event.incident.id, event.incident.title) == (
        "Q123",
        "db down",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", 'expected an object with an "event" object'),
        (b'{"messages": []}', 'expected an object with an "event" object'),
        (b'{"event": {"id": "x"}}', "missing event_type, resource_type, occurred_at, data"),
        (
            b'{"event": {"id": 5, "event_type": "a", "resource_type": "b", "occurred_at": "", "data": {}}}',
            "event.id must be a non-empty string",
        ),
        (
            b'{"event": {"id": "5", "event_type": "a", "resource_type": "b", "occurred_at": "", "data": []}}',
            "event.data must be an object",
        ),
        (
            b'{"event": {"id": "5", "event_type": "incident.triggered", "resource_type": "incident",'
            b' "occurred_at": "", "data": {"type": "incident"}}}',
            "event.data.id is required",
        ),
    ],
)
def test_invalid_payloads_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidDelivery, match=message):
        pagerduty.parse(body)


def test_events_round_trip_through_the_store_form() -> None:
    import dataclasses

    from responder.events import event_from_dict, event_to_dict

    for name in (
        "pd_v3_incident_triggered.json",
        "pd_v3_incident_resolved.json",
        "pd_v3_pagey_ping.json",
    ):
        event = pagerduty.parse(fixture_bytes(name))
        as_dict = event_to_dict(event)
        assert as_dict == json.loads(
            json.dumps(dataclasses.asdict(event))
        )  # same as the generic form
        assert event_from_dict(json.loads(json.dumps(as_dict))) == event
