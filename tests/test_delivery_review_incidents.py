"""An incident's recorded state follows only its lifecycle events: dropped updates, manual runs and
events of other types neither change its status nor cancel its scheduled jobs."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from responder import incidents
from responder.playbook import Context, Playbook, on, playbook
from responder.sources import events_v2
from responder.store import DeliveryStatus, IncidentStatus, JobStatus, NewDelivery, NewJob
from responder.store.sqlite import SQLiteStore
from tests.helpers import API_TOKEN, Client, FakeClock, bare_event, fixture_bytes

MakeClient = Callable[..., Awaitable[Client]]
KEY = "0123456789abcdef0123456789abcdef"
DEDUP_KEY = "review-incident-K"
INCIDENT = events_v2.incident_id(KEY, DEDUP_KEY)
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def playbooks() -> list[Playbook]:
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Stands in for bringing a stack up."""

    @on("incident.acknowledged")
    async def note_ack(ctx: Context) -> None:
        """Matches acknowledgements, so a dropped one is dropped by the store, not by matching."""

    # The acknowledgement in cancel_on makes a stray one visible: it must not cancel the teardown.
    @playbook(delay=600, cancel_on=("incident.triggered", "incident.acknowledged"))
    @on("incident.resolved")
    async def teardown(ctx: Context) -> None:
        """Stands in for destroying the stack after a grace period."""

    return [provision, note_ack, teardown]


async def make(make_client: MakeClient) -> Client:
    # The clock stands still: no content-dedupe window or scheduled delay ends during a test.
    return await make_client(playbooks(), clock=FakeClock(), events_v2_routing_keys=(KEY,))


def ev2(action: str, summary: str = "checkout is down") -> bytes:
    document = json.loads(fixture_bytes("events_v2_trigger.json"))
    document.update(routing_key=KEY, event_action=action, dedup_key=DEDUP_KEY)
    if action == "trigger":
        document["payload"]["summary"] = summary
    else:
        del document["payload"]
    return json.dumps(document).encode()


async def enqueue(client: Client, body: bytes) -> None:
    response = await client.http.post(
        "/v2/enqueue", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 202, await response.text()


async def jobs_of(client: Client) -> list[tuple[str, JobStatus]]:
    jobs = await client.daemon.store.list_jobs(incident_id=INCIDENT, limit=100)
    return [(j.playbook, j.status) for j in sorted(jobs, key=lambda j: j.id)]


async def test_an_acknowledge_for_an_unknown_alert_does_not_swallow_its_trigger(
    make_client: MakeClient,
) -> None:
    client = await make(make_client)
    await enqueue(client, ev2("acknowledge"))  # unknown alert: dropped, as PagerDuty does
    assert await jobs_of(client) == []
    await enqueue(client, ev2("trigger"))
    assert [name for name, _ in await jobs_of(client)] == ["provision"]


async def test_a_stray_acknowledge_after_resolve_changes_nothing(make_client: MakeClient) -> None:
    client = await make(make_client)
    await enqueue(client, ev2("trigger"))
    await enqueue(client, ev2("resolve"))
    await enqueue(client, ev2("acknowledge"))  # the alert is resolved: dropped
    assert ("teardown", JobStatus.SCHEDULED) in await jobs_of(client)
    await enqueue(client, ev2("trigger", summary="checkout is down again"))
    jobs = await client.wait_for_jobs(incident_id=INCIDENT)
    assert [(j.playbook, j.status) for j in sorted(jobs, key=lambda j: j.id)] == [
        ("provision", JobStatus.SUCCEEDED),
        ("teardown", JobStatus.CANCELLED),  # by the new trigger, not by the stray acknowledge
        ("provision", JobStatus.SUCCEEDED),
    ]
    teardown = next(j for j in jobs if j.playbook == "teardown")
    assert teardown.error is not None and "incident.triggered" in teardown.error


async def test_a_manual_run_for_an_incident_leaves_its_status_alone(
    make_client: MakeClient,
) -> None:
    client = await make(make_client)
    await enqueue(client, ev2("trigger"))
    manual = await client.http.post(
        "/playbooks/provision/run", json={"incident_id": INCIDENT}, headers=AUTH
    )
    assert manual.status == 202, await manual.text()
    await enqueue(client, ev2("resolve"))  # still open: accepted
    assert [name for name, _ in await jobs_of(client)] == ["provision", "provision", "teardown"]
    assert ("teardown", JobStatus.SCHEDULED) in await jobs_of(client)


# -- the store's rules, one delivery at a time --------------------------------------------------

NOW = 1_800_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "responder.db")
    await store.open()
    yield store
    await store.close()


def delivery(
    id: str,
    event_type: str,
    *,
    status: DeliveryStatus = DeliveryStatus.ACCEPTED,
    source: str = "pagerduty",
) -> NewDelivery:
    return NewDelivery(
        id=id,
        source=source,
        event_id=f"evt-{id}",
        event_type=event_type,
        incident_id="QREVIEW",
        status=status,
        body=b"{}",
        received_at=NOW,
        updates_need_open_incident=source != "pagerduty",
    )


def job() -> list[NewJob]:
    return [NewJob(playbook="pb", project="p", stack="s", event=bare_event(), max_attempts=1)]


async def test_an_event_of_another_type_leaves_the_incident_open(store: SQLiteStore) -> None:
    assert (await store.record_delivery(delivery("t1", "incident.triggered"), job())).job_ids
    for i, event_type in enumerate(("incident.annotated", "incident.priority_updated", "x.y")):
        await store.record_delivery(delivery(f"n{i}", event_type), job())
    again = await store.record_delivery(delivery("t2", "incident.triggered"), job())
    assert again.status == "deduplicated" and again.job_ids == []


async def test_a_resolve_no_playbook_matched_still_ends_the_incident(store: SQLiteStore) -> None:
    # Matching is about what to run; the incident's state follows the pager regardless.
    await store.record_delivery(delivery("t1", "incident.triggered", source="events_v2"), job())
    await store.record_delivery(
        delivery("r1", "incident.resolved", status=DeliveryStatus.IGNORED, source="events_v2"), []
    )
    again = await store.record_delivery(
        delivery("t2", "incident.triggered", source="events_v2"), job()
    )
    assert again.status == "accepted" and len(again.job_ids) == 1


@pytest.mark.parametrize(
    ("event_type", "known", "after"),
    [
        ("incident.triggered", None, "triggered"),
        ("incident.triggered", "resolved", "triggered"),
        ("incident.triggered", "acknowledged", "acknowledged"),  # a repeat changes nothing
        ("incident.acknowledged", "triggered", "acknowledged"),
        ("incident.unacknowledged", "acknowledged", "triggered"),
        ("incident.reopened", "resolved", "triggered"),
        ("incident.resolved", "acknowledged", "resolved"),
        ("incident.annotated", "triggered", None),
        ("incident.escalated", "acknowledged", None),
        ("manual.provision", "triggered", None),
        ("incident.custom_field_values.updated", "triggered", None),
    ],
)
def test_the_status_comes_from_lifecycle_event_types_only(
    event_type: str, known: str | None, after: str | None
) -> None:
    verdict = incidents.judge(delivery("d", event_type), incidents.parse_status(known))
    assert verdict.news and verdict.incident_status == after


def test_a_recorded_status_is_read_back_and_one_no_rule_knows_is_none() -> None:
    for status in IncidentStatus:
        assert incidents.parse_status(status.value) is status
    assert incidents.parse_status(None) is None
    assert incidents.parse_status("snoozed") is None  # written by another version
    assert incidents.parse_status("TRIGGERED") is None


@pytest.mark.parametrize("known", [None, "resolved"])
@pytest.mark.parametrize("event_type", ["incident.acknowledged", "incident.resolved"])
def test_a_dropped_update_is_no_news(event_type: str, known: str | None) -> None:
    verdict = incidents.judge(
        delivery("d", event_type, source="events_v2"), incidents.parse_status(known)
    )
    assert (verdict.status, verdict.creates_jobs, verdict.news) == ("ignored", False, False)


@pytest.mark.parametrize(
    ("source", "incident", "expected"),
    [
        ("pagerduty", "Q1", True),
        ("events_v2", "ev2-1", True),
        ("alertmanager", "am-1", True),
        ("manual", "Q1", False),
        ("responder", "Q1", False),
        ("pagerduty", "", False),
    ],
)
def test_only_pager_deliveries_about_an_incident_are_news_of_it(
    source: str, incident: str, expected: bool
) -> None:
    d = NewDelivery(
        id="d",
        source=source,
        event_id="e",
        event_type="incident.triggered",
        incident_id=incident,
        status=DeliveryStatus.ACCEPTED,
        body=b"{}",
        received_at=NOW,
    )
    assert incidents.tracks_incident(d) is expected
