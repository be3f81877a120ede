"""Alertmanager intake: the webhook endpoint's answers, then end to end with a real Alertmanager."""

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from playbooks.incident_lifecycle import RESOLVE_GRACE
from responder.playbook import Context, Playbook, on
from responder.sources import alertmanager, events_v2
from responder.store import JobStatus
from tests.alertmanager_server import Alertmanager
from tests.helpers import Client, FakeClock, LogCapture, ProbeTarget

MakeClient = Callable[..., Awaitable[Client]]
TOKEN = "alertmanager-test-token-0123"
KEY = "0123456789abcdef0123456789abcdef"


def notification(
    status: str = "firing", fingerprint: str = "4f2a9c1b7d3e5a60", **labels: str
) -> dict[str, object]:
    labels = {"alertname": "HighLatency", "service": "checkout", "severity": "critical", **labels}
    return {
        "receiver": "responder",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": "p99 > 2s"},
                "startsAt": "2026-11-26T10:00:00Z",
                "endsAt": "2026-11-26T10:05:00Z"
                if status == "resolved"
                else "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.test/graph",
                "fingerprint": fingerprint,
            }
        ],
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test",
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
    }


def recorder(calls: list[Context]) -> list[Playbook]:
    @on(
        "incident.triggered",
        "incident.resolved",
        source="alertmanager",
        labels={"service": "check*"},
    )
    async def record(ctx: Context) -> None:
        """Remember the context."""
        calls.append(ctx)

    return [record]


async def post(
    client: Client, body: object, token: str | None = TOKEN
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.http.post(
        "/webhooks/alertmanager", data=data, headers={"Content-Type": "application/json", **headers}
    )
    return response.status, await response.json()


async def test_firing_then_resolved_and_repeats(make_client: MakeClient) -> None:
    calls: list[Context] = []
    client = await make_client(recorder(calls), alertmanager_token=TOKEN)
    status, answer = await post(client, notification())
    assert status == 202 and answer["alerts"][0]["status"] == "accepted"  # type: ignore[index]
    for _ in range(3):  # Alertmanager repeats the group's notification every repeat_interval
        status, answer = await post(client, notification())
        assert status == 202 and answer["alerts"][0]["status"] == "duplicate"  # type: ignore[index]
    assert (await post(client, notification("resolved")))[0] == 202
    jobs = await client.wait_for_jobs()
    assert [j.event_type for j in jobs] == ["incident.triggered", "incident.resolved"]
    incident = calls[0].incident
    assert incident is not None
    assert incident.id == alertmanager.incident_id(
        '{}:{alertname="HighLatency"}', "4f2a9c1b7d3e5a60"
    )
    assert (incident.severity, incident.urgency, incident.title) == ("critical", "high", "p99 > 2s")
    assert incident.labels["service"] == "checkout"


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_bad_token_is_401(make_client: MakeClient, token: str | None) -> None:
    client = await make_client(recorder([]), alertmanager_token=TOKEN)
    status, answer = await post(client, notification(), token=token)
    assert status == 401 and answer["status"] == 401
    assert await client.store.delivery_ids() == set()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        ({**notification(), "version": "3"}, "unsupported notification version"),
        ({**notification(), "alerts": []}, "alerts must be a non-empty list"),
        (
            {**notification(), "alerts": [{"status": "on fire"}]},
            "alerts[0].status must be firing or resolved",
        ),
        (
            {
                **notification(),
                "alerts": [{"status": "firing", "labels": {"a": 1}, "fingerprint": "ab"}],
            },
            "alerts[0].labels must be an object of strings",
        ),
        (
            {
                **notification(),
                "alerts": [{"status": "firing", "labels": {}, "fingerprint": "../x"}],
            },
            "alerts[0].fingerprint",
        ),
        ({**notification(), "groupKey": 5}, "groupKey must be a string"),
        (
            {
                **notification(),
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {},
                        "fingerprint": "ab",
                        "startsAt": "2026-11-26T10:00:00Z" + "0" * 1100,
                    }
                ],
            },
            "alerts[0].startsAt must be a timestamp of at most 64 characters",
        ),
    ],
)
async def test_malformed_bodies_are_400(make_client: MakeClient, body: object, error: str) -> None:
    client = await make_client(recorder([]), alertmanager_token=TOKEN)
    status, answer = await post(client, body)
    assert status == 400 and error in str(answer["error"])
    assert await client.store.delivery_ids() == set()


async def test_oversized_body_is_413(make_client: MakeClient) -> None:
    client = await make_client(recorder([]), alertmanager_token=TOKEN, max_body_bytes=2048)
    status, _ = await post(client, notification(extra="x" * 4000))
    assert status == 413


@pytest.fixture
def alertmanager_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "alertmanager"
    path.mkdir()
    yield path


@pytest.mark.pulumi
async def test_end_to_end_with_a_real_alertmanager(
    make_client: MakeClient, probe_target: ProbeTarget, alertmanager_dir: Path, logs: LogCapture
) -> None:
    """Both receiver kinds: Events v2 (pagerduty_configs) and the webhook (webhook_configs)."""
    clock = FakeClock()
    client = await make_client(
        clock=clock,
        probe_url=probe_target.url,
        events_v2_routing_keys=(KEY,),
        alertmanager_token=TOKEN,
    )
    daemon_url = str(client.http.make_url("")).rstrip("/")
    manager = Alertmanager(alertmanager_dir, daemon_url, KEY, TOKEN)
    await manager.start()
    try:
        labels = {"alertname": "HighLatency", "service": "checkout", "severity": "critical"}
        await manager.post_alert(labels)
        stacks = await wait_for_stacks(client, 2)
        jobs = await client.wait_for_jobs()
        provisions = [j for j in jobs if j.playbook == "provision_diagnostics"]
        assert {j.incident_id.split("-")[0] for j in provisions} == {"ev2", "am"}
        assert all(j.status == JobStatus.SUCCEEDED for j in provisions)
        for job in provisions:
            assert job.outputs is not None and job.outputs["probe_status"] == 200
        # repeat_interval is 2s: wait until both receivers have sent two repeats, each answered.
        await wait_for_repeats(logs, repeats=2)
        jobs = await client.wait_for_jobs()
        assert (
            len([j for j in jobs if j.playbook == "provision_diagnostics"]) == 2
        )  # no duplicate stacks
        assert len(stacks) == 2

        await manager.post_alert(labels, resolved=True)
        deadline = asyncio.get_running_loop().time() + 60
        while (
            len(
                [
                    j
                    for j in await client.daemon.store.list_jobs()
                    if j.event_type == "incident.resolved"
                ]
            )
            < 2
        ):
            assert asyncio.get_running_loop().time() < deadline, (
                "resolve notifications never arrived"
            )
            await asyncio.sleep(0.3)
        clock.advance(RESOLVE_GRACE + 1)
        client.daemon.runner.notify()
        jobs = await client.wait_for_jobs()
        destroys = [j for j in jobs if j.playbook == "destroy_diagnostics"]
        assert len(destroys) == 2 and all(j.status == JobStatus.SUCCEEDED for j in destroys)
        assert backend_stacks(client) == set()
    finally:
        manager.stop()


def backend_stacks(client: Client) -> set[str]:
    directory = client.daemon.settings.data_dir / "pulumi-state" / ".pulumi" / "stacks" / "burner"
    return (
        {p.name.removesuffix(".json") for p in directory.glob("*.json")}
        if directory.exists()
        else set()
    )


async def wait_for_stacks(client: Client, count: int, timeout: float = 90) -> set[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(backend_stacks(client)) < count or any(
        not j.status.final for j in await client.daemon.store.list_jobs()
    ):
        assert asyncio.get_running_loop().time() < deadline, f"stacks: {backend_stacks(client)}"
        await asyncio.sleep(0.3)
    return backend_stacks(client)


async def wait_for_repeats(logs: LogCapture, repeats: int, timeout: float = 60) -> None:
    """Wait until each receiver (Events v2, webhook) has had `repeats` more notifications than now,
    each found to be a repeat by the store (logged before its answer went out)."""

    def duplicates() -> Counter[object]:
        return Counter(line.get("source") for line in logs.events("delivery.deduplicated"))

    before = duplicates()
    deadline = asyncio.get_running_loop().time() + timeout
    while any(
        duplicates()[s] < before[s] + repeats for s in (events_v2.SOURCE, alertmanager.SOURCE)
    ):
        assert asyncio.get_running_loop().time() < deadline, f"repeats: {duplicates() - before}"
        await asyncio.sleep(0.2)
