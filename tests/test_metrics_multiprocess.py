"""Metrics with several processes: each keeps its values in the supervisor's directory, and any
one's scrape adds up all of them (prometheus-client's multiprocess mode)."""

import asyncio
import datetime
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest

from responder import __version__, metrics
from responder.web.metrics import Scrape
from tests.helpers import REPO, SECRET_A, pd_event, sign
from tests.test_metrics import Samples, parse, series, total
from tests.test_supervisor import Supervised

RECORDER = textwrap.dedent(
    """
    import os, sys, time
    from responder import metrics
    for _ in range(int(sys.argv[1])):
        metrics.delivery_stored("pagerduty", ["accepted"], time.perf_counter())
    metrics.job_attempt_ended("provision", "succeeded", time.monotonic() - 2.0, final=True)
    metrics.daemon_started("v3.0.0-test")
    print(os.getpid())
    """
)


def record_in(directory: Path, deliveries: int) -> int:
    """A process of its own records `deliveries` deliveries and a job into `directory`; its pid."""
    env = {**os.environ, metrics.MULTIPROCESS_VARIABLE: str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", RECORDER, str(deliveries)],
        env=env,
        cwd=REPO,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def scrape_dir(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Samples:
    monkeypatch.setenv(metrics.MULTIPROCESS_VARIABLE, str(directory))
    return parse(generate_latest(Scrape([])).decode())


def test_two_processes_writing_one_directory_are_summed_in_one_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = record_in(tmp_path, 3), record_in(tmp_path, 4)
    samples = scrape_dir(tmp_path, monkeypatch)
    labels = {"source": "pagerduty", "outcome": "accepted"}
    assert total(samples, "responder_deliveries_total", **labels) == 7
    assert total(samples, "responder_intake_duration_seconds_count", source="pagerduty") == 7
    jobs = {"playbook": "provision", "status": "succeeded"}
    assert total(samples, "responder_jobs_finished_total", **jobs) == 2
    durations = {"playbook": "provision", "outcome": "succeeded"}
    assert total(samples, "responder_job_duration_seconds_count", **durations) == 2
    assert total(samples, "responder_job_duration_seconds_sum", **durations) >= 4.0
    # Per process: one start time each; the build info once, whatever the number of processes.
    starts = series(samples, "responder_process_start_time_seconds")
    assert sorted(int(s["pid"]) for s in starts) == sorted([first, second])
    assert series(samples, "responder_build_info") == [
        {"version": __version__, "pulumi_version": "v3.0.0-test"}
    ]

    # A process ends (the supervisor saw its child exit): its counts stay, its own gauges go.
    metrics.process_ended(str(tmp_path), first)
    samples = scrape_dir(tmp_path, monkeypatch)
    assert total(samples, "responder_deliveries_total", **labels) == 7
    starts = series(samples, "responder_process_start_time_seconds")
    assert [int(s["pid"]) for s in starts] == [second]


def test_a_supervisors_directory_is_fresh_and_one_a_killed_supervisor_left_goes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "metrics"
    root.mkdir()
    dead = _ended_pid()
    (root / str(dead)).mkdir()  # left by a supervisor killed with SIGKILL
    (root / str(os.getppid())).mkdir()  # another supervisor's, still running
    (root / str(os.getpid())).mkdir()  # ours, from before a restart under the same pid
    (root / str(os.getpid()) / "counter_1.db").write_bytes(b"old")
    with metrics.shared_metrics_dir(tmp_path) as path:
        assert Path(path) == root / str(os.getpid())
        assert list(Path(path).iterdir()) == []
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [str(os.getppid()), str(os.getpid())]
        )
    assert [p.name for p in root.iterdir()] == [str(os.getppid())]


def _ended_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def child_metrics_dir(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    prefix = f"{metrics.MULTIPROCESS_VARIABLE}=".encode()
    [value] = [entry[len(prefix) :] for entry in environ if entry.startswith(prefix)]
    return Path(value.decode())


async def fetch(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return parse(await response.text())


@pytest.mark.pulumi
async def test_a_supervisors_children_are_counted_together_across_restarts(
    tmp_path: Path, postgres_url: str
) -> None:
    supervised = Supervised(tmp_path, DATABASE_URL=postgres_url, PROCESSES="2")
    supervised.start()
    try:
        await supervised.ready_nodes(2, refused_ok=True)
        children = sorted(supervised.children())
        directory = child_metrics_dir(children[0])
        assert child_metrics_dir(children[1]) == directory
        assert directory == tmp_path / "data" / "metrics" / str(supervised.pid)
        assert directory.is_dir() and directory.stat().st_mode & 0o077 == 0
        base = f"http://127.0.0.1:{await supervised.port()}"
        sent = 16
        # One connection per request: the kernel spreads them over both children.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(sent):
                # No built-in playbook acts on a delegation: recorded, and ignored (no job).
                now = datetime.datetime.now(datetime.UTC).isoformat()
                body = pd_event("incident.delegated", f"QMULTI{i}", occurred_at=now)
                headers = {
                    "Content-Type": "application/json",
                    "X-PagerDuty-Signature": sign(body, SECRET_A),
                    "X-Webhook-Id": f"multi-{i}",
                }
                async with session.post(
                    f"{base}/webhooks/pagerduty", data=body, headers=headers
                ) as answer:
                    assert answer.status == 202, await answer.text()
                    assert (await answer.json())["status"] == "ignored"
            # Both children handled some: each has its own histogram file.
            for pid in children:
                assert (directory / f"histogram_{pid}.db").exists(), sorted(directory.iterdir())
            labels = {"source": "pagerduty", "outcome": "ignored"}
            for _ in range(6):  # whichever child answers the scrape, the sum is the same
                samples = await fetch(session, f"{base}/metrics")
                assert total(samples, "responder_deliveries_total", **labels) == sent
                assert total(samples, "responder_intake_duration_seconds_count") == sent
                starts = series(samples, "responder_process_start_time_seconds")
                assert sorted(int(s["pid"]) for s in starts) == children

            # A child killed: its counts stay in the sum; its start time goes; its replacement's comes.
            os.kill(children[0], signal.SIGKILL)
            await supervised.wait_for(lambda: children[0] not in supervised.children())
            replacement = await supervised.wait_for(
                lambda: [p for p in supervised.children() if p not in children]
            )
            await supervised.ready_nodes(2, refused_ok=True)
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                samples = await fetch(session, f"{base}/metrics")
                pids = sorted(
                    int(s["pid"]) for s in series(samples, "responder_process_start_time_seconds")
                )
                if pids == sorted([children[1], *replacement]):
                    break
                assert asyncio.get_running_loop().time() < deadline, pids
                await asyncio.sleep(0.2)
            assert total(samples, "responder_deliveries_total", **labels) == sent
            assert len(series(samples, "responder_build_info")) == 1
    finally:
        supervised.stop()
    assert supervised.proc is not None and supervised.proc.returncode == 0
    assert not directory.exists()  # the supervisor removed it
    # prometheus-client's warning that it cannot clear labels across processes, once a child's start
    assert "UserWarning" not in supervised.log_path.read_text()
