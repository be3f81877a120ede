"""Intake through real HTTP against hostile senders: odd header bytes, amplification, replays,
re-fired alerts, and an Alertmanager notification with hundreds of alerts."""

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Awaitable, Callable

from responder.playbook import Context, Playbook, on
from responder.sources import events_v2
from tests.helpers import SECRET_A, Client, FakeClock, LogCapture, fixture_bytes, pd_event, sign

MakeClient = Callable[..., Awaitable[Client]]
KEY = "0123456789abcdef0123456789abcdef"
TOKEN = "alertmanager-test-token-0123"


def noop_playbooks() -> list[Playbook]:
    @on("incident.triggered", "incident.resolved")
    async def note(ctx: Context) -> None:
        """Does nothing: these tests are about intake."""

    return [note]


async def make(make_client: MakeClient, **overrides: object) -> Client:
    return await make_client(
        noop_playbooks(), events_v2_routing_keys=(KEY,), alertmanager_token=TOKEN, **overrides
    )


async def raw_post(
    client: Client,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    content_type: bytes = b"application/json",
) -> tuple[int, dict[str, object]]:
    """POST with header bytes exactly as given (aiohttp's client would re-encode them)."""
    url = client.http.make_url(path)
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = [
        f"POST {path} HTTP/1.1".encode(),
        b"Host: localhost",
        b"Connection: close",
        b"Content-Type: " + content_type,
        b"Content-Length: %d" % len(body),
        *(name + b": " + value for name, value in headers),
    ]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    try:
        raw = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def stored_body_bytes(client: Client) -> int:
    with sqlite3.connect(client.store.path) as db:
        return int(db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM payloads").fetchone()[0])


# -- header bytes that are not ASCII -------------------------------------------------------------


async def test_non_ascii_header_bytes_are_refused_not_500(make_client: MakeClient) -> None:
    client = await make(make_client)
    body = pd_event("incident.triggered", "QHDR")
    signature = sign(body, SECRET_A).encode()
    status, answer = await raw_post(
        client,
        "/webhooks/pagerduty",
        body,
        [(b"X-PagerDuty-Signature", signature), (b"X-Webhook-Id", b"wh-\xff")],
    )
    assert status == 400 and "X-Webhook-Id" in str(answer["error"])
    status, _ = await raw_post(
        client, "/webhooks/pagerduty", body, [(b"X-PagerDuty-Signature", signature + b"\xff")]
    )
    assert status == 401
    status, _ = await raw_post(
        client, "/webhooks/pagerduty", body, [(b"X-PagerDuty-Signature", b"v1=\xff")]
    )
    assert status == 401
    alert = fixture_bytes("events_v2_trigger.json")  # any JSON: the token is checked first
    for token in (b"Bearer \xff", b"Bearer " + TOKEN.encode() + b"\xff", b"\xff"):
        status, answer = await raw_post(
            client, "/webhooks/alertmanager", alert, [(b"Authorization", token)]
        )
        assert status == 401 and answer["status"] == 401
    status, _ = await raw_post(
        client, "/webhooks/pagerduty", body, [(b"X-PagerDuty-Signature", signature)], b"a/\xff"
    )
    assert status == 415
    status, _ = await raw_post(client, "/v2/enqueue", alert, [], b"application/json\xff")
    assert status == 400
    assert await client.store.delivery_ids() == set()


async def test_one_bad_delivery_does_not_hang_its_neighbours(make_client: MakeClient) -> None:
    client = await make(make_client)

    async def good(i: int) -> int:
        body = pd_event("incident.triggered", f"QN{i}")
        return (await client.deliver(body, f"good-{i}")).status

    async def bad() -> int:
        body = pd_event("incident.triggered", "QBAD")
        headers = [(b"X-PagerDuty-Signature", sign(body, SECRET_A).encode())]
        status, _ = await raw_post(
            client, "/webhooks/pagerduty", body, [*headers, (b"X-Webhook-Id", b"\xfe\xff")]
        )
        return status

    statuses = await asyncio.wait_for(
        asyncio.gather(*[good(i) for i in range(10)], bad(), *[good(i) for i in range(10, 20)]), 30
    )
    assert statuses[10] == 400
    assert statuses[:10] + statuses[11:] == [202] * 20
    assert await client.store.delivery_ids() == {f"good-{i}" for i in range(20)}


async def test_a_lone_surrogate_in_an_alert_is_a_400(make_client: MakeClient) -> None:
    client = await make(make_client)
    body = (
        b'{"version": "4", "groupKey": "g", "status": "firing", "alerts": [{"status": "firing",'
        b' "labels": {"alertname": "\\ud800"}, "fingerprint": "ab12"}]}'
    )
    response = await asyncio.wait_for(
        client.http.post(
            "/webhooks/alertmanager",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        ),
        15,
    )
    assert response.status == 400 and "surrogate" in (await response.json())["error"]
    assert await client.store.delivery_ids() == set()


# -- amplification -------------------------------------------------------------------------------


async def test_a_large_invalid_event_gets_a_small_answer_and_log_line(
    make_client: MakeClient, logs: LogCapture
) -> None:
    client = await make(make_client)
    body = json.dumps({"links": [1] * 255_000}, separators=(",", ":")).encode()
    assert len(body) > 500_000
    response = await client.http.post(
        "/v2/enqueue", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    text = await response.text()
    assert len(text) < 4096
    assert json.loads(text)["errors"][-1].endswith("more errors")
    assert max(len(line) for line in logs.text.splitlines()) < 4096


# -- replays and re-fires --------------------------------------------------------------------------


async def test_a_replayed_pagerduty_event_under_new_webhook_ids_creates_nothing(
    make_client: MakeClient,
) -> None:
    client = await make(make_client)
    body = pd_event("incident.triggered", "QREPLAY")
    assert (await client.deliver(body, "wh-original")).status == 202
    for i in range(3):
        replay = await client.deliver(body, f"wh-replay-{i}")
        assert replay.status == 200
        assert (await replay.json())["status"] == "duplicate"
    assert len(await client.daemon.store.list_jobs()) == 1
    assert await client.store.delivery_ids() == {"wh-original"}


async def enqueue(client: Client, body: bytes) -> int:
    response = await client.http.post(
        "/v2/enqueue", data=body, headers={"Content-Type": "application/json"}
    )
    return response.status


def ev2(action: str) -> bytes:
    document = json.loads(fixture_bytes("events_v2_trigger.json"))
    document.update(routing_key=KEY, event_action=action, dedup_key="refire-1")
    if action != "trigger":
        del document["payload"]
    return json.dumps(document).encode()


async def test_an_alert_re_fired_after_resolve_with_the_same_body_provisions_again(
    make_client: MakeClient,
) -> None:
    client = await make(make_client, clock=FakeClock())  # the clock stands still: no window ends
    for body in (ev2("trigger"), ev2("trigger"), ev2("resolve"), ev2("trigger")):
        assert await enqueue(client, body) == 202
    jobs = await client.wait_for_jobs()
    assert [j.event_type for j in jobs] == [
        "incident.triggered",
        "incident.resolved",
        "incident.triggered",
    ]


async def test_events_v2_content_dedupe_ends_after_its_window(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make(make_client, clock=clock)
    body = ev2("trigger")
    assert await enqueue(client, body) == 202
    clock.advance(events_v2.REDELIVERY_WINDOW - 1)
    assert await enqueue(client, body) == 202
    assert len(await client.store.delivery_ids()) == 1  # a redelivery
    clock.advance(2)
    assert await enqueue(client, body) == 202
    assert len(await client.store.delivery_ids()) == 2  # a new delivery
    # ...of an alert that is still open: no second job.
    assert len(await client.wait_for_jobs()) == 1
    with sqlite3.connect(client.store.path) as db:
        key = "ev2-" + hashlib.sha256(body).hexdigest()
        assert db.execute("SELECT COUNT(*) FROM deliveries WHERE dedupe_key = ?", (key,)).fetchone()
        # The same body is stored once (its routing key masked).
        assert stored_body_bytes(client) == len(events_v2.parse(body).stored_body)


# -- Alertmanager: one body per notification -----------------------------------------------------


async def test_a_notification_with_300_alerts_stores_its_body_once(make_client: MakeClient) -> None:
    client = await make(make_client)
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": f"db-{i}"},
            "annotations": {"description": "d" * 110},
            "startsAt": "2026-11-26T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.test/graph",
            "fingerprint": f"{i:016x}",
        }
        for i in range(300)
    ]
    document = {"version": "4", "groupKey": "{}:{}", "status": "firing", "alerts": alerts}
    body = json.dumps(document).encode()
    assert 100_000 < len(body) < 130_000
    response = await client.http.post(
        "/webhooks/alertmanager",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status == 202
    answer = await response.json()
    assert [a["status"] for a in answer["alerts"]] == ["accepted"] * 300
    # Every alert's job was committed before the answer went out.
    assert len(await client.daemon.store.list_jobs(limit=1000)) == 300
    assert len(await client.store.delivery_ids()) == 300
    assert stored_body_bytes(client) == len(body)
