"""Each source turns (headers, body, credentials) into a delivery, or refuses it with one of two errors."""

import hashlib
import json

import pytest

from responder.sources import (
    Delivery,
    InvalidDelivery,
    Unauthorized,
    alertmanager,
    events_v2,
    pagerduty,
)
from tests.helpers import SECRET_A, SECRET_B, fixture_bytes, pd_event, sign

KEY = "0123456789abcdef0123456789abcdef"
NOW = 1_900_000_000.0
DAY = 86400.0


def pd_from_http(headers: dict[str, str], body: bytes) -> Delivery:
    return pagerduty.from_http(headers, body, [SECRET_A], now=NOW, max_age=DAY)


def recent_pd_event() -> bytes:
    return pd_event("incident.triggered", occurred_at="2030-03-17T17:46:00Z")


def test_pagerduty_takes_the_webhook_id_or_else_the_event_id() -> None:
    body = recent_pd_event()
    signed = {"X-PagerDuty-Signature": sign(body, SECRET_A)}
    [named] = pd_from_http({**signed, "X-Webhook-Id": "wh-1"}, body).arrivals
    [unnamed] = pd_from_http(signed, body).arrivals
    assert named.delivery_id == "wh-1"
    assert unnamed.delivery_id == unnamed.event.id == json.loads(body)["event"]["id"]


@pytest.mark.parametrize("webhook_id", ["é", "x" * 129, "a\tb"])
def test_pagerduty_refuses_a_malformed_webhook_id_before_the_signature(webhook_id: str) -> None:
    with pytest.raises(InvalidDelivery, match="X-Webhook-Id"):
        pd_from_http({"X-Webhook-Id": webhook_id}, recent_pd_event())


def test_pagerduty_signature_is_checked_unless_turned_off() -> None:
    body = recent_pd_event()
    with pytest.raises(Unauthorized) as missing:
        pd_from_http({}, body)
    assert missing.value.reason == "missing signature"
    with pytest.raises(Unauthorized) as wrong:
        pd_from_http({"X-PagerDuty-Signature": sign(body, SECRET_B)}, body)
    assert wrong.value.reason == "signature does not match"
    assert pagerduty.from_http({}, body, None, now=NOW, max_age=DAY).arrivals


def test_pagerduty_refuses_a_stale_event_after_its_signature() -> None:
    body = pd_event("incident.triggered", occurred_at="2020-01-01T00:00:00Z")
    with pytest.raises(InvalidDelivery, match="older than the retention period"):
        pd_from_http({"X-PagerDuty-Signature": sign(body, SECRET_A)}, body)


def ev2_body(**overrides: object) -> bytes:
    document = json.loads(fixture_bytes("events_v2_trigger.json"))
    document.update(routing_key=KEY, **overrides)
    return json.dumps(document).encode()


def test_events_v2_stores_the_body_without_its_routing_key_and_dedupes_on_the_sent_body() -> None:
    body = ev2_body()
    delivery = events_v2.from_http({}, body, [KEY])
    [arrival] = delivery.arrivals
    assert KEY.encode() not in delivery.body
    assert json.loads(delivery.body)["routing_key"] == events_v2.REDACTED
    assert arrival.dedupe_key == "ev2-" + hashlib.sha256(body).hexdigest()
    assert arrival.dedupe_window == events_v2.REDELIVERY_WINDOW
    assert arrival.updates_need_open_incident


def test_events_v2_refusals_carry_pagerduty_s_errors() -> None:
    with pytest.raises(Unauthorized) as unknown:
        events_v2.from_http({}, ev2_body(), ["f" * 32])
    assert unknown.value.message == "Unknown routing key"
    assert unknown.value.errors == ["'routing_key' is not a configured integration key"]
    with pytest.raises(InvalidDelivery) as invalid:
        events_v2.from_http({}, ev2_body(event_action="explode"), [KEY])
    assert any("event_action" in e for e in invalid.value.errors)


def am_body(*fingerprints: str) -> bytes:
    alerts = [
        {"status": "firing", "labels": {"alertname": "A"}, "fingerprint": f} for f in fingerprints
    ]
    return json.dumps({"version": "4", "groupKey": "g", "alerts": alerts}).encode()


def test_alertmanager_needs_its_bearer_token_and_challenges_without_it() -> None:
    body = am_body("aaaa")
    for header in ("", "Bearer wrong", "Basic token", "Bearer "):
        with pytest.raises(Unauthorized) as caught:
            alertmanager.from_http({"Authorization": header}, body, "token")
        assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(Unauthorized):
        alertmanager.from_http({"Authorization": "Bearer "}, body, "")


def test_alertmanager_gives_one_arrival_per_alert_and_one_body() -> None:
    body = am_body("aaaa", "bbbb")
    delivery = alertmanager.from_http({"Authorization": "Bearer token"}, body, "token")
    assert delivery.body is body
    assert [a.event.incident.incident_key for a in delivery.arrivals if a.event.incident] == [
        "aaaa",
        "bbbb",
    ]
    assert all(a.updates_need_open_incident for a in delivery.arrivals)
