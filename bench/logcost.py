"""Log cost per delivery: the old configuration against responder.logs, at INFO and at WARNING."""

# Micro-benchmark: one delivery logs what the intake path logs for a signed `incident.triggered`
# matching two playbooks (`delivery.received`, `delivery.verified`, `delivery.matched`, two
# `job.queued`), with the context binding of the web middleware and enqueue; lines go to a real
# file, as in production; old and new alternate within each round; medians of the rounds, in µs
# per delivery. Then the daemon itself, old and new, at both levels: its own CPU per delivery.
#
#     python -m bench.logcost [--runs 9] [--deliveries 4000] [--daemon-us 270] [--daemon 3000]

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import structlog

from bench.common import NOOP_PLAYBOOKS, drained, responder_server
from bench.common import deliveries as signed_deliveries
from bench.load import closed_loop
from bench.logs_old import OldRedactor, old_configure
from responder import logs
from responder.store import DeliveryStatus

# The daemon's secrets at start-up (webhook secret, API token, passphrase), then a daemon that has
# also registered the secret outputs of many stacks.
SECRETS = [
    "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    "api-token-0123456789",
    "pass-7f1e9a",
]
MANY = SECRETS + [f"stack-output-secret-{i:03d}-{i * 7919:08x}" for i in range(47)]


def new_configure(secrets: list[str], level: str, stream: TextIO) -> None:
    redactor = logs.Redactor()
    redactor.add(*secrets)
    logs.configure_logging(redactor, level=level, stream=stream, json_lines=True)


PLAYBOOKS = ["diagnostics", "notify_channel"]


def deliveries(count: int, get_logger: Callable[[str], Any]) -> float:
    """Seconds for `count` deliveries' worth of logging, loggers as the modules hold them."""
    webhooks, enqueue = get_logger("responder.webhooks"), get_logger("responder.enqueue")
    bind, clear = structlog.contextvars.bind_contextvars, structlog.contextvars.clear_contextvars
    started = time.perf_counter()
    for i in range(count):
        delivery = f"{i:08x}-6b2a-4c1e-9d3f-0a1b2c3d4e5f"  # each delivery its own, as in the daemon
        clear()  # the web middleware
        bind(source="pagerduty", delivery_id=delivery)
        webhooks.info("delivery.received", bytes=1187)
        webhooks.info("delivery.verified", events=1)
        log = enqueue.bind(
            delivery_id=delivery,
            event_id=delivery,
            event_type="incident.triggered",
            incident_id="Q1",
        )
        log.info("delivery.matched", playbooks=PLAYBOOKS, outcome=DeliveryStatus.ACCEPTED)
        for job_id, playbook in enumerate(PLAYBOOKS):
            log.info("job.queued", job_id=job_id, playbook=playbook, stack=f"incident-Q1-{job_id}")
    return time.perf_counter() - started


def one_run(case: str, level: str, secrets: list[str], count: int, stream: TextIO) -> float:
    """µs per delivery for one configuration, after a warm-up."""
    if case == "old":
        redactor = OldRedactor()
        redactor.add(*secrets)
        old_configure(redactor, level, stream)
        get: Callable[[str], Any] = structlog.stdlib.get_logger
    else:
        new_configure(secrets, level, stream)
        get = logs.get_logger
    deliveries(count // 10, get)
    return deliveries(count, get) / count * 1e6


def sink_costs(path: Path, count: int) -> dict[str, float]:
    """µs per line written to a file: os.write straight to the fd vs a buffered write and flush."""
    line = b'{"event":"job.queued","level":"info","logger":"responder.enqueue","x":"' + b"y" * 200
    line += b'"}\n'
    with path.open("ab") as f:
        started = time.perf_counter()
        for _ in range(count):
            os.write(f.fileno(), line)
        direct = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(count):
            f.write(line)
            f.flush()
        buffered = time.perf_counter() - started
    return {"os.write": direct / count * 1e6, "write+flush": buffered / count * 1e6}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# `responder serve` with the old configuration and redactor patched in, for the daemon baseline.
OLD_DAEMON = """
import logging, sys
import responder.cli
from bench import logs_old
def configure(redactor=None, *, level="INFO", stream=None, json_lines=None):
    logs_old.old_configure(redactor, level, stream or sys.stdout)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
responder.cli.configure_logging = configure
responder.cli.Redactor = logs_old.OldRedactor
sys.exit(responder.cli.main(["serve"]))
"""


async def daemon_run(
    case: str, level: str, count: int, work: Path, playbooks: Path
) -> tuple[float, float]:
    """The real daemon (`responder serve`, logs to a file): its own CPU µs per delivery, the jobs
    of `playbooks` included, and the lines it logged per delivery."""
    data_dir = Path(tempfile.mkdtemp(dir=work))
    server = responder_server(data_dir, playbooks, RESPONDER_LOG_LEVEL=level)
    if case == "old":
        server.argv = [sys.executable, "-c", OLD_DAEMON]
    pool = signed_deliveries(count + 200)
    await server.start(data_dir / "server.log")
    assert server.proc is not None
    try:
        await closed_loop(server.url, pool[:200], 8, 60)  # warm-up
        await drained(server)
        lines_before = len((data_dir / "server.log").read_bytes().splitlines())
        before = cpu_seconds(server.proc.pid)
        result = await closed_loop(server.url, pool[200:], 16, 300)
        await drained(server)
        spent = cpu_seconds(server.proc.pid) - before
        lines = len((data_dir / "server.log").read_bytes().splitlines()) - lines_before
    finally:
        server.stop()
    if result.errors or result.ok != count:
        raise RuntimeError(f"{level}: {result.errors} errors, {result.ok} of {count} answered")
    return spent / count * 1e6, lines / count


NEVER = (
    "from responder.playbook import Context, on\n\n\n"
    '@on("incident.acknowledged")\nasync def never(ctx: Context) -> None:\n'
    '    """Matches no bench delivery (all are triggers): intake alone."""\n'
)
DAEMON_CASES = [("new", "INFO"), ("new", "WARNING"), ("old", "INFO"), ("old", "WARNING")]


async def daemon_runs(runs: int, count: int) -> dict[str, list[tuple[float, float]]]:
    """Intake alone (no playbook matches: no job) and with the intake bench's no-op job."""
    found: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="responder-logcost-daemon-") as tmp:
        nothing = Path(tmp) / "unmatched-playbooks"
        nothing.mkdir()
        (nothing / "never.py").write_text(NEVER)
        for mode, playbooks in (("intake", nothing), ("with no-op job", NOOP_PLAYBOOKS)):
            for run in range(runs):
                for case, level in DAEMON_CASES if run % 2 == 0 else DAEMON_CASES[::-1]:
                    found.setdefault(f"{mode}: {case}, {level}", []).append(
                        await daemon_run(case, level, count, Path(tmp), playbooks)
                    )
    return found


CASES = [  # (implementation, level, secrets, label)
    ("old", "INFO", SECRETS, "old, INFO, 3 secrets"),
    ("old", "INFO", MANY, "old, INFO, 50 secrets"),
    ("old", "WARNING", SECRETS, "old, WARNING"),
    ("new", "INFO", SECRETS, "new, INFO, 3 secrets"),
    ("new", "INFO", MANY, "new, INFO, 50 secrets"),
    ("new", "WARNING", SECRETS, "new, WARNING"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--deliveries", type=int, default=4000)
    parser.add_argument(
        "--daemon-us",
        type=float,
        default=270.0,
        help="the daemon's cost per delivery at WARNING, for the implied INFO/WARNING ratio",
    )
    parser.add_argument(
        "--daemon",
        type=int,
        default=3000,
        metavar="N",
        help="also run the daemon at INFO and WARNING, N deliveries a run (0: skip)",
    )
    args = parser.parse_args()
    times: dict[str, list[float]] = {label: [] for *_, label in CASES}
    sinks: dict[str, list[float]] = {"os.write": [], "write+flush": []}
    with tempfile.TemporaryDirectory(prefix="responder-logcost-") as tmp:
        path = Path(tmp) / "daemon.log"
        with path.open("w") as stream:
            for run in range(args.runs):
                order = CASES if run % 2 == 0 else CASES[::-1]  # neither goes first every time
                for case, level, secrets, label in order:
                    times[label].append(one_run(case, level, secrets, args.deliveries, stream))
                for name, cost in sink_costs(Path(tmp) / "sink.log", args.deliveries * 5).items():
                    sinks[name].append(cost)
                stream.truncate(0)
        logs.configure_logging(stream=io.StringIO(), json_lines=True)
    print(report(times, sinks, args))
    if args.daemon:
        print(daemon_report(asyncio.run(daemon_runs(3, args.daemon)), args.daemon))
    return 0


def daemon_report(found: dict[str, list[tuple[float, float]]], count: int) -> str:
    cpu = {label: statistics.median(c for c, _ in runs) for label, runs in found.items()}
    rows = [
        f"| {label} | {cpu[label]:.0f} | {min(c for c, _ in runs):.0f}–{max(c for c, _ in runs):.0f}"
        f" | {statistics.median(n for _, n in runs):.1f} |"
        for label, runs in found.items()
    ]
    return "\n".join(
        [
            "",
            f"The daemon itself (`responder serve`, logs to a file), 3 runs per case of {count}"
            " signed deliveries (16 concurrent, Python client on the same cores); its own CPU time"
            " per delivery (clock ticks of /proc/<pid>/stat), jobs included where there are:",
            "",
            "| what, logs, RESPONDER_LOG_LEVEL | CPU µs per delivery (median) | spread | lines per"
            " delivery |",
            "|---|---|---|---|",
            *rows,
            "",
            *(
                f"- {mode}: daemon CPU per delivery, INFO / WARNING: new"
                f" **{cpu[f'{mode}: new, INFO'] / cpu[f'{mode}: new, WARNING']:.2f}×**,"
                f" old {cpu[f'{mode}: old, INFO'] / cpu[f'{mode}: old, WARNING']:.2f}×"
                " (target ≤ 1.3×)."
                for mode in ("intake", "with no-op job")
            ),
        ]
    )


def report(times: dict[str, list[float]], sinks: dict[str, list[float]], args: Any) -> str:
    med = {label: statistics.median(v) for label, v in times.items()}
    lines = [
        f"Command: `python -m bench.logcost --runs {args.runs} --deliveries {args.deliveries}"
        f" --daemon-us {args.daemon_us:g} --daemon {args.daemon}` (Python {sys.version.split()[0]},"
        f" structlog {structlog.__version__})",
        "",
        "| configuration | µs per delivery (median) | spread |",
        "|---|---|---|",
    ]
    for label, values in times.items():
        lines.append(f"| {label} | {med[label]:.1f} | {min(values):.1f}–{max(values):.1f} |")
    old_extra = med["old, INFO, 3 secrets"] - med["old, WARNING"]
    new_extra = med["new, INFO, 3 secrets"] - med["new, WARNING"]
    daemon = args.daemon_us
    lines += [
        "",
        f"- INFO, new / old: **{med['new, INFO, 3 secrets'] / med['old, INFO, 3 secrets']:.2f}×**"
        f" (3 secrets), {med['new, INFO, 50 secrets'] / med['old, INFO, 50 secrets']:.2f}×"
        " (50 secrets).",
        f"- What INFO adds over WARNING per delivery: old {old_extra:.1f} µs, new {new_extra:.1f} µs.",
        f"- Implied daemon cost at INFO / at WARNING, for a daemon spending {daemon:g} µs per"
        f" delivery at WARNING: old {(daemon + old_extra) / daemon:.2f}×,"
        f" new **{(daemon + new_extra) / daemon:.2f}×** (target ≤ 1.3×). The new log path alone"
        f" keeps within 1.3× while the daemon spends at least {new_extra / 0.3:.0f} µs per delivery"
        f" at WARNING, i.e. below {0.3e6 / new_extra:.0f} deliveries/s per core (old:"
        f" {old_extra / 0.3:.0f} µs, {0.3e6 / old_extra:.0f}/s).",
        f"- One line to a file: os.write {statistics.median(sinks['os.write']):.2f} µs,"
        f" buffered write + flush {statistics.median(sinks['write+flush']):.2f} µs (medians).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
