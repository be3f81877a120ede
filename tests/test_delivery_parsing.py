"""The three sources against hostile bodies, and the signature and token checks against empty keys."""

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from responder.sources import InvalidDelivery, alertmanager, events_v2, pagerduty
from responder.sources.parsing import MAX_DEPTH, MAX_ERRORS, decode_json
from responder.web.auth import require_token
from responder.web.errors import ApiError
from tests.helpers import SECRET_A, fixture_bytes

KEY = "0123456789abcdef0123456789abcdef"


def pd_body(**event: Any) -> bytes:
    document = json.loads(fixture_bytes("pd_v3_incident_triggered.json"))
    document["event"].update(event)
    return json.dumps(document).encode()


def ev2_body(**fields: Any) -> bytes:
    document = json.loads(fixture_bytes("events_v2_trigger.json"))
    document.update({"routing_key": KEY, **fields})
    return json.dumps(document).encode()


def am_document(**fields: Any) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "HighLatency", "service": "checkout"},
        "annotations": {"summary": "p99 > 2s"},
        "startsAt": "2026-11-26T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.test/graph",
        "fingerprint": "4f2a9c1b7d3e5a60",
    }
    return {
        "receiver": "responder",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test",
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        **fields,
    }


def am_body(**fields: Any) -> bytes:
    return json.dumps(am_document(**fields)).encode()


def am_alert_body(**alert: Any) -> bytes:
    document = am_document()
    document["alerts"][0].update(alert)
    return json.dumps(document).encode()


def ev2_errors(body: bytes) -> list[str]:
    with pytest.raises(events_v2.InvalidEvent) as caught:
        events_v2.parse(body)
    return caught.value.errors


# Each source's parser, raising its own error type for a body it refuses.
PARSERS: dict[str, tuple[Callable[[bytes], object], type[Exception]]] = {
    "pagerduty": (pagerduty.parse, InvalidDelivery),
    "events_v2": (events_v2.parse, events_v2.InvalidEvent),
    "alertmanager": (alertmanager.parse, InvalidDelivery),
}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("source", sorted(PARSERS))
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (nested(100_000), "depth"),  # was a RecursionError
        (b'{"a": ' + nested(MAX_DEPTH) + b"}", f"deeper than {MAX_DEPTH}"),
        (b'{"n": ' + b"9" * 5000 + b"}", "number"),  # was a ValueError (int digits limit)
        (b'{"n": 1e400}', "number"),  # infinity
        (b'{"s": "\\ud800"}', "surrogate"),  # cannot be stored
        (b'{"s": "\xff"}', "UTF-8"),
    ],
)
def test_every_source_refuses_unbounded_json(source: str, body: bytes, problem: str) -> None:
    parse, error = PARSERS[source]
    with pytest.raises(error, match=problem) as caught:
        parse(body)
    assert len(str(caught.value)) < 300


def test_the_depth_limit_is_exact() -> None:
    assert decode_json(nested(MAX_DEPTH)) == decode_json(nested(MAX_DEPTH))
    with pytest.raises(InvalidDelivery, match="deeper"):
        decode_json(nested(MAX_DEPTH + 1))


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"event_action": []}, "'event_action' is invalid"),  # was TypeError: unhashable
        ({"event_action": {"a": 1}}, "'event_action' is invalid"),
        ({"routing_key": ["x"]}, "'routing_key' is missing or blank"),
        ({"dedup_key": 5}, "'dedup_key' must be a non-empty string"),
        ({"payload": {"summary": [], "source": "s", "severity": "info"}}, "'payload.summary'"),
        ({"payload": {"summary": "s", "source": {}, "severity": "info"}}, "'payload.source'"),
        ({"payload": {"summary": "s", "source": "s", "severity": []}}, "'payload.severity'"),
        (
            {"payload": {"summary": "s", "source": "s", "severity": "info", "component": 1}},
            "'payload.component' must be a string, not a number",
        ),
        (
            {"payload": {"summary": "s", "source": "s", "severity": "info", "timestamp": 7}},
            "'payload.timestamp'",
        ),
        (
            {"payload": {"summary": "s", "source": "s", "severity": "info", "custom_details": []}},
            "'payload.custom_details' must be an object, not a list",
        ),
        ({"links": "x"}, "'links' must be a list, not a string"),
        ({"links": [{"href": "h", "text": 1}]}, "'links[0].text' must be a string"),
        ({"images": [{"src": "s", "alt": []}]}, "'images[0].alt' must be a string"),
        ({"client": ["x"]}, "'client' must be a string"),
        ({"routing_key": "é" * 32}, "non-alphanumeric"),
    ],
)
def test_events_v2_names_every_wrong_type(fields: dict[str, Any], error: str) -> None:
    errors = ev2_errors(ev2_body(**fields))
    assert any(error in e for e in errors), errors


def test_events_v2_acknowledge_checks_the_types_of_a_payload_it_ignores() -> None:
    body = ev2_body(event_action="acknowledge", payload={"source": {"a": 1}})
    assert any("'payload.source' must be a string" in e for e in ev2_errors(body))


def test_error_lists_are_capped() -> None:
    errors = ev2_errors(json.dumps({"routing_key": KEY, "links": [1] * 100_000}).encode())
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1] == f"… and {100_000 + 1 - MAX_ERRORS} more errors"  # and event_action
    assert len(json.dumps(errors)) < 2000


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (am_body(commonLabels=["a"]), "commonLabels must be an object of strings, not a list"),
        (am_body(commonLabels="a=b"), "commonLabels must be an object of strings, not a string"),
        (am_body(commonLabels={"a": 1}), "commonLabels must be an object of strings"),
        (am_body(status=["firing"]), "status must be firing or resolved"),  # was unhashable
        (am_body(groupLabels=[]), "groupLabels must be an object of strings"),
        (am_body(receiver=1), "receiver must be a string, not a number"),
        (am_body(truncatedAlerts="0"), "truncatedAlerts must be a number, not a string"),
        (am_body(truncatedAlerts=True), "truncatedAlerts must be a number, not a boolean"),
        (am_body(alerts=[[]]), "alerts[0] must be an object, not a list"),
        (am_alert_body(status=["firing"]), "alerts[0].status must be firing or resolved"),
        (am_alert_body(labels=None), "alerts[0].labels must be an object of strings"),
        (am_alert_body(labels={"a": {}}), "alerts[0].labels must be an object of strings"),
        (am_alert_body(annotations=["x"]), "alerts[0].annotations must be an object of strings"),
        (am_alert_body(startsAt=5), "alerts[0].startsAt must be a string"),
        (am_alert_body(generatorURL={}), "alerts[0].generatorURL must be a string"),
        (am_alert_body(fingerprint="é1"), "alerts[0].fingerprint"),
        (am_alert_body(fingerprint="a" * 65), "alerts[0].fingerprint"),
    ],
)
def test_alertmanager_names_every_wrong_type(body: bytes, error: str) -> None:
    with pytest.raises(InvalidDelivery) as caught:
        alertmanager.parse(body)
    assert error in str(caught.value)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (pd_body(occurred_at=[]), "event.occurred_at must be a string, not a list"),
        (pd_body(agent="me"), "event.agent must be an object, not a string"),
        (pd_body(agent={"id": 5}), "event.agent.id must be a string, not a number"),
        (pd_body(client=[1]), "event.client must be an object"),
        (pd_body(data={"type": "incident", "id": {}}), "event.data.id must be a string"),
        (pd_body(data={"type": "incident", "id": "Q", "title": 1}), "event.data.title"),
        (pd_body(data={"type": "incident", "id": "Q", "number": "7"}), "event.data.number"),
        (pd_body(data={"type": "incident", "id": "Q", "number": True}), "event.data.number"),
        (pd_body(data={"type": "incident", "id": "Q", "service": []}), "event.data.service"),
        (pd_body(data={"type": "incident", "id": "Q", "teams": {}}), "event.data.teams must"),
        (pd_body(data={"type": "incident", "id": "Q", "teams": [1]}), "event.data.teams[0]"),
        (pd_body(data={"type": "incident_note", "incident": "Q1"}), "event.data.incident must"),
    ],
)
def test_pagerduty_names_every_wrong_type(body: bytes, error: str) -> None:
    with pytest.raises(InvalidDelivery) as caught:
        pagerduty.parse(body)
    assert error in str(caught.value)


def test_quoted_values_are_cut_short() -> None:
    with pytest.raises(InvalidDelivery) as caught:
        alertmanager.parse(am_body(version="4" * 100_000))
    assert len(str(caught.value)) < 200
    with pytest.raises(InvalidDelivery) as caught:
        alertmanager.parse(am_alert_body(labels={"k" * 100_000: 1}))
    assert len(str(caught.value)) < 300


# -- empty keys and odd headers never authenticate -------------------------------------------------


def test_an_empty_secret_verifies_nothing() -> None:
    body = fixture_bytes("pd_v3_incident_triggered.json")
    signed_with_nothing = pagerduty.sign(body, "")
    assert not pagerduty.verify_signature(body, signed_with_nothing, [""])
    assert not pagerduty.verify_signature(body, signed_with_nothing, ["", SECRET_A])
    assert pagerduty.verify_signature(body, pagerduty.sign(body, SECRET_A), ["", SECRET_A])


def test_a_signature_header_that_is_not_ascii_matches_nothing() -> None:
    body = fixture_bytes("pd_v3_incident_triggered.json")
    good = pagerduty.sign(body, SECRET_A)
    # aiohttp hands over a \xff byte as the surrogate \udcff; it used to raise UnicodeEncodeError.
    assert not pagerduty.verify_signature(body, good + ",v1=\udcff", [SECRET_A])
    assert not pagerduty.verify_signature(body, "v1=é" + good[4:], [SECRET_A])


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer ", ""),  # an empty configured token used to accept an empty offer
        ("Bearer", ""),
        ("", ""),
        ("Bearer x", ""),
        ("Bearer ", "token-123456"),
        ("Basic token-123456", "token-123456"),
    ],
)
def test_require_token_refuses(header: str, token: str) -> None:
    request = make_mocked_request("POST", "/", headers={"Authorization": header})
    with pytest.raises(ApiError) as caught:
        require_token(request, token)
    assert caught.value.status == 401


def test_require_token_accepts_the_token() -> None:
    request = make_mocked_request("POST", "/", headers={"Authorization": "Bearer token-123456"})
    require_token(request, "token-123456")
