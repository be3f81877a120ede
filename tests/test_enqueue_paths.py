"""Jobs enter through `enqueue` alone: a manual run gets its playbook's options like a webhook's job,
and a caller may name the jobs' stack (the reaper's way)."""

import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from responder.enqueue import Deps, Run, enqueue
from responder.events import Event, Incident
from responder.playbook import Context, Playbook, on, playbook
from responder.sources import Arrival
from responder.store import DeliveryStatus, JobStatus, StoreUnavailable
from responder.store.sqlite import SQLiteStore
from tests.helpers import API_TOKEN, Client, FakeClock, pd_event

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def delayed() -> list[Playbook]:
    @playbook(delay=600, cancel_on=("incident.reopened",), coalesce=True)
    @on("incident.resolved")
    async def teardown(ctx: Context) -> None:
        """Stands in for a destroy after a grace period."""

    return [teardown]


async def test_a_manual_run_keeps_its_playbook_s_delay_and_cancel_on(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()
    client = await make_client(delayed(), clock)
    answer = await client.http.post(
        "/playbooks/teardown/run", json={"incident_id": "QTEST0001"}, headers=AUTH
    )
    assert answer.status == 202, await answer.text()
    job_id = (await answer.json())["job"]
    job = await client.daemon.store.get_job(job_id)
    assert job is not None and job.status == JobStatus.SCHEDULED  # not run at once
    now = datetime.datetime.fromtimestamp(clock.now, datetime.UTC).isoformat()
    reopened = pd_event("incident.reopened", "QTEST0001", occurred_at=now)
    assert (await client.deliver(reopened)).status == 202
    job = await client.daemon.store.get_job(job_id)
    assert job is not None and job.status == JobStatus.CANCELLED, job


async def test_a_store_outage_on_a_manual_run_is_a_503_to_retry(make_client: MakeClient) -> None:
    client = await make_client(delayed(), FakeClock())
    await client.daemon.store.close()
    answer = await client.http.post("/playbooks/teardown/run", json={}, headers=AUTH)
    assert answer.status == 503
    assert answer.headers["Retry-After"]
    assert "job store unavailable" in (await answer.json())["error"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    yield store
    await store.close()


def deps_for(store: SQLiteStore, notified: list[int]) -> Deps:
    return Deps(store, delayed(), 3, lambda: 1000.0, lambda: notified.append(1))


async def test_a_run_on_a_named_stack_carries_its_params_and_notifies_once(
    store: SQLiteStore,
) -> None:
    notified: list[int] = []
    event = Event(id="reap-1", source="responder", type="responder.reap", resource_type="stack")
    run = Run(delayed(), {"reason": "idle"}, stack=("other-project", "burner-1"))
    [result] = await enqueue(deps_for(store, notified), b"{}", [Arrival("reap-1", event)], run=run)
    assert result.status == DeliveryStatus.ACCEPTED and len(result.job_ids) == 1
    job = await store.get_job(result.job_ids[0])
    assert job is not None
    assert (job.project, job.stack, job.params) == ("other-project", "burner-1", {"reason": "idle"})
    assert job.max_attempts == 3 and job.status == JobStatus.SCHEDULED
    assert notified == [1]


async def test_matching_decides_without_a_run_and_nothing_matched_wakes_nobody(
    store: SQLiteStore,
) -> None:
    notified: list[int] = []
    incident = Incident(id="Q1")
    triggered = Event("e1", "pagerduty", "incident.triggered", "incident", incident=incident)
    resolved = Event("e2", "pagerduty", "incident.resolved", "incident", incident=incident)
    deps = deps_for(store, notified)
    [ignored] = await enqueue(deps, b"{}", [Arrival("d1", triggered)])
    assert (ignored.status, ignored.job_ids, notified) == (DeliveryStatus.IGNORED, [], [])
    [accepted] = await enqueue(deps, b"{}", [Arrival("d2", resolved)])
    assert accepted.status == DeliveryStatus.ACCEPTED and len(accepted.job_ids) == 1
    [again] = await enqueue(deps, b"{}", [Arrival("d2", resolved)])
    assert again.status == DeliveryStatus.DUPLICATE and notified == [1]


async def test_enqueue_raises_the_store_s_outage(store: SQLiteStore) -> None:
    await store.close()
    event = Event("e1", "pagerduty", "incident.resolved", "incident", incident=Incident(id="Q1"))
    with pytest.raises(StoreUnavailable):
        await enqueue(deps_for(store, []), b"{}", [Arrival("d1", event)])
