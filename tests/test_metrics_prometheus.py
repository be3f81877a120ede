"""Acceptance: Debian's Prometheus scrapes the daemon on loopback, and its own query API sees the
delivery and job counters move after real signed deliveries and a real job (the real pulumi CLI)."""

from pathlib import Path

import aiohttp
import pytest

from responder.stacks import PulumiEnvironment
from tests.helpers import (
    API_TOKEN,
    SECRET_A,
    LogCapture,
    ProbeTarget,
    pd_event,
    served,
    settings_for,
    sign,
)
from tests.prometheus_server import Prometheus

pytestmark = pytest.mark.pulumi


def now_or_zero(promql: str) -> str:
    """The query, or 0 while it has no series (a labelled counter appears at its first count)."""
    return f"sum({promql}) or vector(0)"


async def test_prometheus_sees_deliveries_and_jobs_counted(
    tmp_path: Path,
    data_dir: Path,
    logs: LogCapture,
    pulumi_env: PulumiEnvironment,
    probe_target: ProbeTarget,
) -> None:
    settings = settings_for(data_dir, probe_url=probe_target.url)
    accepted = now_or_zero(
        'responder_deliveries_total{source="pagerduty",outcome="accepted",job="responder"}'
    )
    duplicates = now_or_zero('responder_deliveries_total{outcome="duplicate"}')
    succeeded = now_or_zero('responder_jobs_finished_total{status="succeeded"}')
    ups = now_or_zero('responder_pulumi_operation_duration_seconds_count{operation="up"}')
    steps = now_or_zero('responder_step_duration_seconds_count{step="up",outcome="succeeded"}')
    async with served(settings, logs) as port:
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
        try:
            await prometheus.start()
            await prometheus.wait_for('up{job="responder"}', 1)
            await prometheus.wait_for("responder_build_info", 1)
            # The counters live in this test process and may have moved in earlier tests.
            before = {q: await prometheus.value(q) or 0.0 for q in (accepted, duplicates)}
            before.update({q: await prometheus.value(q) or 0.0 for q in (succeeded, ups, steps)})

            body = pd_event("incident.triggered", "QPROM1", title="checkout down")
            headers = {
                "Content-Type": "application/json",
                "X-PagerDuty-Signature": sign(body, SECRET_A),
                "X-Webhook-Id": "prometheus-1",
            }
            url = f"http://127.0.0.1:{port}/webhooks/pagerduty"
            async with aiohttp.ClientSession() as session:
                for expected in (202, 200):  # the delivery, then its redelivery
                    async with session.post(url, data=body, headers=headers) as answer:
                        assert answer.status == expected, await answer.text()
                        if expected == 202:
                            [job_id] = (await answer.json())["jobs"]

            await prometheus.wait_for(accepted, before[accepted] + 1)
            await prometheus.wait_for(duplicates, before[duplicates] + 1)
            # The job: a real `up` of the burner stack, counted as its step and Pulumi operation.
            await prometheus.wait_for(succeeded, before[succeeded] + 1, timeout=240)
            await prometheus.wait_for(ups, before[ups] + 1)
            await prometheus.wait_for(steps, before[steps] + 1)
            await prometheus.wait_for("responder_live_stacks", 1)
            job = await job_record(port, job_id)
            assert job["status"] == "succeeded", job
            [build] = await prometheus.query("responder_build_info")
            labels = build["metric"]
            assert isinstance(labels, dict) and labels["pulumi_version"].startswith("v3.")
        finally:
            prometheus.stop()


async def job_record(port: int, job_id: int) -> dict[str, object]:
    """GET /jobs/{id}, with the token (read access may require it)."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/jobs/{job_id}", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        record: dict[str, object] = await response.json()
        return record
