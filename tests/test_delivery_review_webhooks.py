"""Webhook intake after the attacker review: stale signed PagerDuty events are refused, every Events
v2 error is in the Events API's shape, and no routing key reaches the store."""

import datetime
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from responder.playbook import Context, Playbook, on
from responder.sources import InvalidDelivery, events_v2, pagerduty
from tests.helpers import Client, FakeClock, fixture_bytes, pd_event

MakeClient = Callable[..., Awaitable[Client]]
KEY = "0123456789abcdef0123456789abcdef"
DAY = 86400.0
RETENTION = 30 * DAY


def playbooks() -> list[Playbook]:
    @on("incident.triggered", "incident.resolved")
    async def note(ctx: Context) -> None:
        """Does nothing: these tests are about intake."""

    return [note]


async def make(make_client: MakeClient, clock: FakeClock, **overrides: object) -> Client:
    settings: dict[str, object] = {"retention": RETENTION, **overrides}
    return await make_client(playbooks(), clock=clock, events_v2_routing_keys=(KEY,), **settings)


def iso(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pd_body(incident: str, occurred_at: str) -> bytes:
    document = json.loads(pd_event("incident.triggered", incident))
    document["event"]["occurred_at"] = occurred_at
    return json.dumps(document).encode()


# -- PagerDuty V3: no event older than the retention period ---------------------------------------


async def test_a_signed_event_older_than_the_retention_is_refused(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()
    client = await make(make_client, clock)
    stale = await client.deliver(pd_body("QSTALE", iso(clock.now - 40 * DAY)), "wh-stale")
    assert stale.status == 400
    error = (await stale.json())["error"]
    assert "occurred_at" in error and "retention" in error
    assert await client.store.delivery_ids() == set()
    assert await client.daemon.store.list_jobs() == []
    fresh = await client.deliver(pd_body("QFRESH", iso(clock.now - 60)), "wh-fresh")
    assert fresh.status == 202
    assert await client.store.delivery_ids() == {"wh-fresh"}


async def test_the_age_limit_is_the_configured_retention(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make(make_client, clock, retention=50 * DAY)
    response = await client.deliver(pd_body("QKEPT", iso(clock.now - 40 * DAY)), "wh-kept")
    assert response.status == 202


@pytest.mark.parametrize(
    "occurred_at", ["", "yesterday", "2026-13-45T00:00:00Z", "2027-01-15T08:00:00"]
)
async def test_an_unreadable_or_zoneless_occurred_at_is_refused(
    make_client: MakeClient, occurred_at: str
) -> None:
    client = await make(make_client, FakeClock())
    response = await client.deliver(pd_body("QODD", occurred_at), "wh-odd")
    assert response.status == 400
    assert "event.occurred_at must be an ISO 8601 timestamp" in (await response.json())["error"]
    assert await client.store.delivery_ids() == set()


def test_check_recent_measures_age_from_now() -> None:
    event = pagerduty.parse(
        fixture_bytes("pd_v3_incident_triggered.json")
    )  # 2026-03-14T09:26:53.589Z
    occurred = datetime.datetime(2026, 3, 14, 9, 26, 53, 589000, datetime.UTC).timestamp()
    pagerduty.check_recent(event, occurred + RETENTION, RETENTION)  # exactly the limit: kept
    with pytest.raises(InvalidDelivery, match="older than the retention period"):
        pagerduty.check_recent(event, occurred + RETENTION + 1, RETENTION)


# -- Events v2: every error in the Events API's shape ---------------------------------------------


def ev2_document(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = json.loads(fixture_bytes("events_v2_trigger.json"))
    document.update(routing_key=KEY, **overrides)
    return document


def assert_events_api_error(answer: object, status: str) -> None:
    assert isinstance(answer, dict) and set(answer) == {"status", "message", "errors"}, answer
    assert answer["status"] == status and answer["message"]
    assert answer["errors"] and all(isinstance(e, str) and e for e in answer["errors"])


async def test_a_store_outage_is_a_503_in_the_events_api_shape(make_client: MakeClient) -> None:
    client = await make(make_client, FakeClock())
    await client.daemon.store.close()
    response = await client.http.post("/v2/enqueue", json=ev2_document())
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert_events_api_error(await response.json(), "unavailable")


async def test_shutting_down_is_a_503_in_the_events_api_shape(make_client: MakeClient) -> None:
    client = await make(make_client, FakeClock())
    client.daemon.accepting = False
    response = await client.http.post("/v2/enqueue", json=ev2_document())
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert_events_api_error(await response.json(), "unavailable")


async def test_other_refusals_are_in_the_events_api_shape(make_client: MakeClient) -> None:
    client = await make(make_client, FakeClock(), max_body_bytes=2048)
    big = json.dumps(ev2_document(client="x" * 4000)).encode()
    declared = await client.http.post(
        "/v2/enqueue", data=big, headers={"Content-Type": "application/json"}
    )
    assert declared.status == 413
    assert_events_api_error(await declared.json(), "invalid event")

    async def chunks() -> AsyncIterator[bytes]:
        yield big  # no Content-Length: aiohttp's own limit stops the read

    chunked = await client.http.post(
        "/v2/enqueue", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status == 413
    assert_events_api_error(await chunked.json(), "invalid event")
    wrong_method = await client.http.get("/v2/enqueue")
    assert wrong_method.status == 405 and wrong_method.headers["Allow"] == "POST"
    assert_events_api_error(await wrong_method.json(), "invalid event")
    not_json = await client.http.post(
        "/v2/enqueue", data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert not_json.status == 400
    assert_events_api_error(await not_json.json(), "invalid event")
    assert await client.store.delivery_ids() == set()


# -- Events v2: the routing key is a credential ---------------------------------------------------


def stored_bytes(path: Path) -> bytes:
    """Everything SQLite wrote: the database file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


async def test_the_store_holds_no_routing_key(make_client: MakeClient) -> None:
    client = await make(make_client, FakeClock())
    body = json.dumps(ev2_document()).encode()
    for _ in range(2):  # the second is a redelivery, recognised by the body as sent
        response = await client.http.post(
            "/v2/enqueue", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status == 202
    assert len(await client.store.delivery_ids()) == 1
    path = client.store.path
    with sqlite3.connect(path) as db:
        [(stored, dedupe_key)] = db.execute(
            "SELECT p.body, d.dedupe_key FROM deliveries AS d JOIN payloads AS p ON p.digest = d.payload"
        ).fetchall()
    assert dedupe_key == "ev2-" + hashlib.sha256(body).hexdigest()
    assert json.loads(stored) == {**json.loads(body), "routing_key": events_v2.REDACTED}
    assert KEY.encode() not in stored_bytes(path)
