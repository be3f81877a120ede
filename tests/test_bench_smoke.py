"""The benchmark suite: wrk's intake script counts what it should, and the smoke run works end to end."""

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from bench.common import SECRET
from bench.run import job_timings, replace_sections
from bench.stacks import environment
from bench.vegeta import parse
from bench.wrk import WrkRun, run_wrk, write_pool
from responder.sources import pagerduty
from tests.helpers import REPO


class Stub:
    """A webhook receiver that checks each delivery's signature and answers like responder does:
    202 naming the delivery, 200 `duplicate` for a repeat, and here 500 for every fifth delivery."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.accepted: set[str] = set()
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        webhook_id = request.headers["X-Webhook-Id"]
        signature = request.headers["X-PagerDuty-Signature"]
        if not pagerduty.verify_signature(body, signature, [SECRET]) or request.headers[
            "X-Signature"
        ] != "sha256=" + signature.removeprefix("v1="):
            self.bad_signatures += 1
            return web.Response(status=403)
        repeat = webhook_id in self.received
        self.received.append(webhook_id)
        if repeat:
            return web.json_response({"status": "duplicate", "delivery_id": webhook_id})
        if int(webhook_id.rsplit("-", 1)[1]) % 5 == 0:
            return web.Response(status=500)
        self.accepted.add(webhook_id)
        return web.json_response({"status": "accepted", "delivery_id": webhook_id}, status=202)


async def run_against_stub(
    aiohttp_server: AiohttpServer, tmp_path: Path, pool_size: int
) -> tuple[Stub, WrkRun]:
    stub = Stub()
    app = web.Application()
    app.router.add_post("/webhooks/pagerduty", stub.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    pool = tmp_path / "pool.txt"
    write_pool(pool, pool_size)
    url = str(server.make_url("/webhooks/pagerduty"))
    return stub, await run_wrk(url, pool, tmp_path, threads=2, connections=2, seconds=1)


async def test_wrk_script_sends_each_signed_delivery_once_and_counts_the_answers(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    stub, result = await run_against_stub(aiohttp_server, tmp_path, pool_size=50_000)
    assert stub.bad_signatures == 0
    assert stub.received and len(set(stub.received)) == len(stub.received)
    assert result.wrapped == 0 and result.duplicates == 0 and result.socket_errors == 0
    assert result.ok > 0 and result.non_2xx > 0
    assert result.ok + result.non_2xx == result.requests
    # The ids of the 2xx answers wrk received: each accepted by the stub; the stub may have
    # accepted a few more whose answers were still in flight when wrk stopped (one per connection).
    assert len(result.acknowledged) == len(set(result.acknowledged)) == result.ok
    assert set(result.acknowledged) <= stub.accepted
    assert len(stub.accepted) - result.ok <= 2
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


async def test_wrk_script_reports_a_pool_that_ran_out(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    stub, result = await run_against_stub(aiohttp_server, tmp_path, pool_size=10)
    assert result.wrapped > 0 and result.duplicates > 0
    assert len(set(stub.received)) == 10 < len(stub.received)


def test_a_partial_run_replaces_only_its_own_sections_of_the_report() -> None:
    report = "# Results\n\n## Intake (old)\n\nold\n\n## End to end\n\ne2e\n\n## Analysis\n\nmine\n"
    new = replace_sections(report, {"intake": "## Intake (new)\n\nnew\n"})
    assert new == report.replace("## Intake (old)\n\nold\n", "## Intake (new)\n\nnew\n")
    added = replace_sections("# Results\n", {"footprint": "## Footprint\n\nf\n"})
    assert added == "# Results\n\n## Footprint\n\nf\n"


def test_the_floor_environment_is_set_only_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Left in the bench's own environment, a data dir outlives its temporary directory: servers
    # started later and `pulumi version` (run for the report) recreate its pulumi-home.
    monkeypatch.setenv("BENCH_KEPT", "before")
    monkeypatch.delenv("BENCH_ADDED", raising=False)
    with environment({"BENCH_KEPT": "during", "BENCH_ADDED": "during"}):
        assert os.environ["BENCH_KEPT"] == os.environ["BENCH_ADDED"] == "during"
    assert os.environ["BENCH_KEPT"] == "before" and "BENCH_ADDED" not in os.environ


def test_a_jobs_own_timings_are_its_steps_and_its_queue_and_run_times() -> None:
    job = {
        "created_at": "2026-11-27T10:00:00Z",
        "started_at": "2026-11-27T10:00:00.250000Z",
        "finished_at": "2026-11-27T10:00:02Z",
        "steps": [
            {"step": "set_config", "duration_ms": 700.0},
            {"step": "up", "duration_ms": 950.0},
        ],
    }
    assert job_timings(job) == {
        "step set_config": 0.7,
        "step up": 0.95,
        "queued → started": 0.25,
        "started → finished": 1.75,
    }


@pytest.mark.pulumi
def test_bench_smoke_run_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    # The run's own temporary directory, where the `postgres` user can reach its cluster's files.
    temp = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    temp.chmod(0o755)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TMPDIR": str(temp)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        # Its temporary directory is gone, and nothing recreated any part of it.
        assert not list(temp.glob("responder-bench-*")), list(temp.rglob("*"))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    report = out.read_text()
    for heading in ("## Intake", "## End to end", "## Concurrency", "## Footprint"):
        assert heading in report
    # Both intake configurations ran under wrk, and responder acknowledged deliveries in each,
    # every one of them found in its store afterwards.
    assert "wrk -t1" in report
    counts = re.findall(r"missing from the store: \*\*(\d+)\*\* of (\d+)\.", report)
    assert len(counts) == 2 and all(m == "0" and int(n) > 0 for m, n in counts), counts
    rates = re.findall(r"^\| (?:responder|adnanh/webhook [^|]*) \| (\d+) \|", report, re.M)
    assert len(rates) == 4 and all(int(r) > 0 for r in rates), rates
    assert "missing from its store afterwards: **0**" in report
    # Each configuration also counts its deliveries once their jobs have run, which can only be
    # slower than counting their answers.
    answered = re.findall(r"^responder / adnanh/webhook.*?; median \*\*([\d.]+)×", report, re.M)
    run = re.findall(r"once its job has run .*?; median \*\*([\d.]+)×", report, re.M)
    assert len(answered) == len(run) == 2, (answered, run)
    assert all(0 < float(r) <= float(a) for r, a in zip(run, answered, strict=True)), (
        run,
        answered,
    )
    assert "The generator is vegeta" in report  # the open loop is the compiled one
    open_rows = re.findall(
        r"^\| \(\w\) [^|]+ \| (?:responder|adnanh/webhook) \| ([\d.]+) \|", report, re.M
    )
    assert len(open_rows) == 4 and all(float(p50) > 0 for p50 in open_rows), open_rows
    assert "responder 0, adnanh/webhook 0." in report
    # End to end: the job's own step timings, and the CLI processes of a provisioning counted.
    assert re.search(r"^\| step up \| \d+\.\d+ \|", report, re.M), report
    assert re.search(r"\*\*\d+ on the critical path\*\* \(`stack init`", report), report
    # Concurrency: a row per worker count, with its run-by-run ratio.
    assert re.search(
        r"^\| 2 \| [\d.]+ \([\d.–]+\) \| [\d.]+ \([\d.–]+\) \| [\d.]+ \|", report, re.M
    )


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_drain_smoke_run_compares_two_checkouts(store: str) -> None:
    # The checkout against itself: both drain every job, and the report says so run by run.
    temp = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    temp.chmod(0o755)  # where the `postgres` user can reach its cluster's files
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bench.drain", "--jobs", "40", "--runs", "2"]
            + ["--against", str(REPO)]
            + (["--postgres"] if store == "postgres" else []),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TMPDIR": str(temp)},
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(
        r"^\| (this checkout|baseline) \| (\d+) \| \d+–\d+ \| (\d+) \|", result.stdout, re.M
    )
    assert [name for name, *_ in rows] == ["this checkout", "baseline"], result.stdout
    assert all(int(rate) > 0 and int(cpu) > 0 for _, rate, cpu in rows), rows
    assert re.search(r"run by run: [\d.]+, [\d.]+; median \*\*[\d.]+×\*\*", result.stdout)


def test_vegeta_results_are_timed_from_each_scheduled_send() -> None:
    """A send vegeta made late counts its lateness: at 10 a second, send 2 was due 0.2 s after the
    first; made at 0.5 s and answered in 10 ms, it took 310 ms. Failures and transport errors are
    errors; a 2xx names its delivery."""

    def answer(seq: int) -> str:
        return base64.b64encode(f'{{"delivery_id":"d-{seq}"}}'.encode()).decode()

    rows = [  # timestamp ns, code, latency ns, out, in, error, body, attack, seq, method, url, headers
        f"1500000000,202,10000000,1,1,,{answer(2)},,2,POST,u,",
        f"1000000000,202,5000000,1,1,,{answer(0)},,0,POST,u,",
        f"1100000000,200,7000000,1,1,,{answer(1)},,1,POST,u,",
        "1300000000,503,1000000,1,1,,,,3,POST,u,",
        "1400000000,0,30000000000,0,0,timeout,,,4,POST,u,",
        # Answered 2xx without naming a delivery: not JSON, JSON cut short, not an object.
        *(
            f"1{seq}00000000,200,1000000,1,1,,{base64.b64encode(body).decode()},,{seq},POST,u,"
            for seq, body in ((5, b"ok"), (6, b'{"delivery'), (7, b"[1]"))
        ),
    ]
    run = parse("\n".join(rows) + "\n", rate=10)
    assert (run.sent, run.ok, run.errors) == (8, 6, 2)
    assert [round(ms) for ms in run.latencies_ms] == [5, 7, 310, 1, 30000, 1, 1, 1]
    assert run.acknowledged == ["d-0", "d-1", "d-2"]
