"""GET /metrics over real deliveries through the live HTTP app: what each counter, histogram and
gauge says after deliveries, jobs and store outages (stack operations: the recording fake)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from responder import __version__
from responder.outcome import AwaitingApproval
from responder.playbook import Context, on, playbook
from responder.store import JobStatus, StoreUnavailable
from responder.web.metrics import STORE_TIMEOUT
from tests.helpers import API_TOKEN, SECRET_B, Client, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Client) -> Samples:
    answer = await client.http.get("/metrics")
    assert answer.status == 200, await answer.text()
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await answer.text())


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` carrying these labels (and any others)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls) in samples if n == name]


@on("incident.triggered", title="^ok")
async def provision(ctx: Context) -> None:
    await ctx.stack.set_config({"incident_id": ctx.event.incident_id})
    await ctx.stack.up()


@on("incident.triggered", title="^boom")
async def broken(_ctx: Context) -> None:
    raise RuntimeError("the playbook's own bug")


async def test_deliveries_jobs_steps_and_gauges_are_counted(make_client: MakeClient) -> None:
    client = await make_client([provision, broken])
    before = await scrape(client)

    ok = pd_event("incident.triggered", "QMETRIC1", title="ok: checkout down")
    assert (await client.deliver(ok, "metrics-1")).status == 202
    assert (await client.deliver(ok, "metrics-1")).status == 200  # a redelivery
    boom = pd_event("incident.triggered", "QMETRIC2", title="boom")
    assert (await client.deliver(boom, "metrics-2")).status == 202
    unmatched = pd_event("incident.triggered", "QMETRIC3", title="nothing matches this")
    answer = await client.deliver(unmatched, "metrics-3")
    assert (await answer.json())["status"] == "ignored"
    # Refused: a wrong signature, a wrong content type, a body that is not a V3 envelope.
    assert (await client.deliver(ok, "metrics-4", secret=SECRET_B)).status == 401
    wrong_type = {"Content-Type": "text/plain"}
    assert (await client.deliver(ok, "metrics-5", headers=wrong_type)).status == 415
    assert (await client.deliver(b'{"event": 1}', "metrics-6")).status == 400
    jobs = await client.wait_for_jobs()
    assert sorted(j.status for j in jobs) == ["failed", "succeeded"]
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    deliveries = "responder_deliveries_total"
    pd = {"source": "pagerduty"}
    assert moved(deliveries, **pd, outcome="accepted") == 2
    assert moved(deliveries, **pd, outcome="duplicate") == 1
    assert moved(deliveries, **pd, outcome="ignored") == 1
    assert moved(deliveries, **pd, outcome="rejected", reason="unauthorized") == 1
    assert moved(deliveries, **pd, outcome="rejected", reason="unsupported_media_type") == 1
    assert moved(deliveries, **pd, outcome="rejected", reason="invalid") == 1
    assert moved(deliveries, **pd) == 7
    # Intake latency: every delivery stored or recognised, not the refused ones.
    assert moved("responder_intake_duration_seconds_count", **pd) == 4
    assert moved("responder_intake_duration_seconds_bucket", **pd, le="+Inf") == 4

    jobs_finished = "responder_jobs_finished_total"
    assert moved(jobs_finished, playbook="provision", status="succeeded") == 1
    assert moved(jobs_finished, playbook="broken", status="failed") == 1
    assert moved(jobs_finished) == 2
    durations = "responder_job_duration_seconds_count"
    assert moved(durations, playbook="provision", outcome="succeeded") == 1
    assert moved(durations, playbook="broken", outcome="failed") == 1
    steps = "responder_step_duration_seconds_count"
    assert moved(steps, step="up", outcome="succeeded") == 1
    assert moved(steps, step="set_config", outcome="succeeded") == 1
    assert moved(steps, outcome="failed") == 0

    # Read from this daemon's store when scraped.
    for status in ("queued", "scheduled", "running", "awaiting_approval"):
        assert after[("responder_queue_depth", frozenset({("status", status)}))] == 0
    assert after[("responder_live_stacks", frozenset())] == 1
    assert total(after, "responder_build_info", version=__version__) == 1
    [build] = series(after, "responder_build_info")
    assert build["pulumi_version"] == client.daemon.ops.pulumi_version
    assert total(after, "responder_process_start_time_seconds") > 1.7e9


async def test_a_queued_job_shows_in_the_queue_depth(make_client: MakeClient) -> None:
    release = asyncio.Event()

    @on("incident.triggered")
    async def held(_ctx: Context) -> None:
        await release.wait()

    client = await make_client([held], workers=1)
    for i in range(3):  # one stack each: one runs, two wait for the only worker
        answer = await client.deliver(pd_event("incident.triggered", f"QDEPTH{i}"), f"depth-{i}")
        assert answer.status == 202
    deadline = asyncio.get_running_loop().time() + 30
    while (samples := await scrape(client))[
        ("responder_queue_depth", frozenset({("status", "running")}))
    ] != 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert samples[("responder_queue_depth", frozenset({("status", "queued")}))] == 2
    release.set()
    await client.wait_for_jobs()
    samples = await scrape(client)
    assert samples[("responder_queue_depth", frozenset({("status", "queued")}))] == 0


@pytest.mark.parametrize("failure", ["unavailable", "hangs", "breaks"])
async def test_a_store_outage_is_counted_and_the_scrape_still_answers(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    client = await make_client([provision])
    before = await scrape(client)

    async def unfinished_job_counts() -> Any:
        if failure == "hangs":
            await asyncio.sleep(3600)
        if failure == "breaks":
            raise RuntimeError("a fault nobody expected")
        raise StoreUnavailable("injected outage of unfinished_job_counts")

    monkeypatch.setattr(client.daemon.store, "unfinished_job_counts", unfinished_job_counts)
    started = asyncio.get_running_loop().time()
    after = await scrape(client)
    assert asyncio.get_running_loop().time() - started < STORE_TIMEOUT + 5
    assert not series(after, "responder_queue_depth")  # unknown, not zero
    assert not series(after, "responder_live_stacks")
    errors = "responder_store_errors_total"
    assert total(after, errors, where="metrics") - total(before, errors, where="metrics") == 1
    assert series(after, "responder_build_info")  # the rest is there as ever


async def test_a_delivery_refused_for_a_store_outage_is_counted(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client([provision])
    before = await scrape(client)

    async def record_deliveries(*_args: Any) -> Any:
        raise StoreUnavailable("injected outage of record_deliveries")

    monkeypatch.setattr(client.daemon.store, "record_deliveries", record_deliveries)
    answer = await client.deliver(pd_event("incident.triggered", "QOUT1", title="ok"), "out-1")
    assert answer.status == 503
    monkeypatch.undo()
    after = await scrape(client)
    labels = {"source": "pagerduty", "outcome": "rejected", "reason": "store_unavailable"}
    deliveries = "responder_deliveries_total"
    assert total(after, deliveries, **labels) - total(before, deliveries, **labels) == 1
    errors = "responder_store_errors_total"
    assert total(after, errors, where="http") - total(before, errors, where="http") == 1


async def test_events_v2_and_alertmanager_count_under_their_own_source(
    make_client: MakeClient,
) -> None:
    key, token = "0123456789abcdef0123456789abcdef", "alertmanager-token-0123456789"
    client = await make_client([], events_v2_routing_keys=(key,), alertmanager_token=token)
    before = await scrape(client)
    event = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": "disk",
        "payload": {"summary": "disk full", "source": "db-1", "severity": "critical"},
    }
    assert (await client.http.post("/v2/enqueue", json=event)).status == 202
    assert (await client.http.post("/v2/enqueue", json={**event, "routing_key": "x"})).status in (
        400,
        401,
    )
    bearer = {"Authorization": "Bearer wrong-token-0123456789"}
    answer = await client.http.post("/webhooks/alertmanager", json={}, headers=bearer)
    assert answer.status == 401
    after = await scrape(client)
    deliveries = "responder_deliveries_total"

    def moved(**labels: str) -> float:
        return total(after, deliveries, **labels) - total(before, deliveries, **labels)

    assert moved(source="events_v2", outcome="ignored") == 1
    assert moved(source="events_v2", outcome="rejected") == 1
    assert moved(source="alertmanager", outcome="rejected", reason="unauthorized") == 1


async def test_the_openmetrics_format_is_served_to_who_asks_for_it(
    make_client: MakeClient,
) -> None:
    client = await make_client([provision])
    answer = await client.http.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await answer.text()
    assert text.endswith("# EOF\n") and "responder_build_info" in text


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=x",
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text; version=1.x",
    ],
)
async def test_an_accept_header_prometheus_cannot_read_gets_the_text_format(
    make_client: MakeClient, logs: LogCapture, accept: str
) -> None:
    """Anyone may send /metrics any Accept: one whose version prometheus_client cannot compare
    raised inside it, a 500 with a traceback in the log per request."""
    client = await make_client([provision])
    answer = await client.http.get("/metrics", headers={"Accept": accept})
    assert answer.status == 200, await answer.text()
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "responder_build_info" in await answer.text()
    assert not logs.events("http.unhandled_error")


@pytest.mark.pulumi
async def test_a_failing_pulumi_operation_is_counted_by_kind(make_client: MakeClient) -> None:
    """The real CLI: a program that raises fails its `up` as a program error."""

    @playbook(project="metricsbroken", program="tests.programs.metrics_broken:pulumi_program")
    @on("incident.triggered")
    async def doomed(ctx: Context) -> None:
        await ctx.stack.up()

    client = await make_client([doomed])
    before = await scrape(client)
    answer = await client.deliver(pd_event("incident.triggered", "QBROKEN1"), "broken-1")
    assert answer.status == 202
    [job] = await client.wait_for_jobs()
    assert job.status == "failed" and "program" in (job.error or ""), job.error
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    failures = "responder_pulumi_operation_failures_total"
    assert moved(failures, operation="up", kind="program_error") == 1
    assert moved(failures, operation="up") == 1
    ups = "responder_pulumi_operation_duration_seconds_count"
    assert moved(ups, operation="up", outcome="failed") == 1
    assert moved(ups, operation="up", outcome="succeeded") == 0
    assert moved("responder_step_duration_seconds_count", step="up", outcome="failed") == 1
    assert moved("responder_jobs_finished_total", playbook="doomed", status="failed") == 1
    assert after[("responder_live_stacks", frozenset())] == 0


AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_jobs_the_store_ends_are_counted_once_by_final_status(
    make_client: MakeClient,
) -> None:
    @on("incident.triggered")
    async def gated(_ctx: Context) -> None:
        """Submits a plan for approval."""
        raise AwaitingApproval({"operation": "destroy", "steps": []})

    @playbook(delay=600, cancel_on=("incident.reopened",))
    @on("incident.resolved")
    async def later(_ctx: Context) -> None:
        """Waits `scheduled` for ten minutes."""

    client = await make_client([gated, later])
    before = await scrape(client)
    await client.deliver(pd_event("incident.triggered", "QGATE"), "gate")
    [waiting] = await client.wait_for_jobs(settled=(JobStatus.AWAITING_APPROVAL,))
    for incident in ("QCANCEL", "QREOPEN"):
        await client.deliver(pd_event("incident.resolved", incident), f"{incident}-resolved")
    scheduled = {j.incident_id: j.id for j in await client.daemon.store.list_jobs()}
    for _ in range(2):  # repeated, each decision is answered again and counted once
        for path in (f"/jobs/{waiting.id}/reject", f"/jobs/{scheduled['QCANCEL']}/cancel"):
            assert (await client.http.post(path, headers=AUTH)).status == 200, path
    await client.deliver(pd_event("incident.reopened", "QREOPEN"), "QREOPEN-reopened")

    after = await scrape(client)
    name = "responder_jobs_finished_total"
    moved = {
        (playbook, status): total(after, name, playbook=playbook, status=status)
        - total(before, name, playbook=playbook, status=status)
        for playbook, status in (("gated", "rejected"), ("later", "cancelled"))
    }
    assert moved == {("gated", "rejected"): 1, ("later", "cancelled"): 2}
