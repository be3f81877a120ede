"""GET /incidents/{id}: the JSON shape of an incident's deliveries, jobs (with steps) and stacks."""

from collections.abc import Awaitable, Callable

from responder.playbook import Context, on
from responder.store import Caps, StackRecord, StackStatus, StepRecord
from tests.helpers import Client, FakeClock, pd_event

MakeClient = Callable[..., Awaitable[Client]]
T0 = 1_800_000_000.0
ISO0 = "2027-01-15T08:00:00Z"  # T0


@on("incident.triggered")
async def nothing(_ctx: Context) -> None:
    """Touches no stack."""


async def test_an_incident_shows_its_deliveries_jobs_and_stacks(make_client: MakeClient) -> None:
    clock = FakeClock(T0)
    client = await make_client([nothing], clock=clock)
    body = pd_event("incident.triggered", "QSHAPE", event_id="evt-shape")
    assert (await client.deliver(body, "wh-shape")).status == 202
    [job] = await client.wait_for_jobs(incident_id="QSHAPE")
    store = client.daemon.store
    await store.add_step(job.id, StepRecord("up", T0, 12.5, "succeeded", None, {"create": 2}))
    record = StackRecord(
        project="proj",
        stack="QSHAPE-burner",
        program="prog",
        incident_id="QSHAPE",
        playbook="nothing",
        service="",
        status=StackStatus.PROVISIONING,
        created_at=T0 - 60,
        last_activity_at=T0 - 60,
        last_operation="reserve",
        idle_ttl=3600.0,
    )
    assert await store.reserve_stack(record, Caps()) is None
    await store.touch_stack(
        "proj",
        "QSHAPE-burner",
        operation="up",
        now=T0,
        status=StackStatus.LIVE,
        outputs={"url": "http://x"},
    )

    answer = await client.http.get("/incidents/QSHAPE")
    assert answer.status == 200
    assert await answer.json() == {
        "id": "QSHAPE",
        "deliveries": [
            {
                "id": "wh-shape",
                "source": "pagerduty",
                "event_id": "evt-shape",
                "event_type": "incident.triggered",
                "status": "accepted",
                "received_at": ISO0,
            }
        ],
        "jobs": [
            {
                "id": job.id,
                "status": "succeeded",
                "playbook": "nothing",
                "project": job.project,
                "stack": job.stack,
                "incident_id": "QSHAPE",
                "event_type": "incident.triggered",
                "event_id": "evt-shape",
                "delivery_id": "wh-shape",
                "attempts": 1,
                "max_attempts": job.max_attempts,
                "created_at": ISO0,
                "started_at": ISO0,
                "finished_at": ISO0,
                "outputs": job.outputs,
                "error": None,
                "coalesced_into": None,
                "plan": None,
                "node": client.daemon.store.node,  # the node that ran it
                "lease_expires_at": None,  # held only while it runs
                "steps": [
                    {
                        "step": "up",
                        "started_at": ISO0,
                        "duration_ms": 12.5,
                        "outcome": "succeeded",
                        "error": None,
                        "changes": {"create": 2},
                    }
                ],
            }
        ],
        "stacks": [
            {
                "project": "proj",
                "stack": "QSHAPE-burner",
                "incident_id": "QSHAPE",
                "incident_status": "triggered",
                "playbook": "nothing",
                "service": None,
                "status": "live",
                "created_at": "2027-01-15T07:59:00Z",
                "age_seconds": 60.0,
                "last_activity_at": ISO0,
                "last_operation": "up",
                "outputs": {"url": "http://x"},
                "export_path": None,
                "idle_ttl": 3600.0,
                "max_age": None,
            }
        ],
    }
    assert (await client.http.get("/incidents/QNONE")).status == 404
