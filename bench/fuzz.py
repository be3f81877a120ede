"""The long fuzz run: generated requests against a real daemon on loopback, and a JSON report.

    .venv/bin/python -m bench.fuzz --requests 100000
    .venv/bin/python -m bench.fuzz --seed 7 --show 4242      # print case 4242 of seed 7

It starts `responder serve` with a temporary data dir, known credentials and the fuzz playbooks
(every job finishes at once, so no Pulumi operation runs), sends the issue-9 hazards and then
generated cases (`bench.fuzz_cases`) with bounded concurrency and a per-request timeout, checks
`/readyz`, stops the daemon and checks that every acknowledged delivery is in its store. It exits
non-zero when a property is violated: an answer >= 500 other than 503, an unanswered request, an
error that is not JSON or amplifies the request, an acknowledged delivery missing from the store, or
a daemon not ready at the end. Request i is hazard i, or past them the case generated from
`Random(f"{seed}:{i}")`, so any failure can be shown again with `--show`.
"""

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from bench.fuzz_cases import (
    PLAYBOOKS_DIR,
    Acknowledged,
    Case,
    Keys,
    any_case,
    hazards,
    missing,
    open_store,
    send,
    snapshot_lookup,
    violations,
)
from bench.fuzz_cases import acknowledged as acknowledged_by

REPO = Path(__file__).resolve().parent.parent
EXAMPLES_PER_FAILURE = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_env(data_dir: Path, port: int, keys: Keys) -> dict[str, str]:
    # Only our settings: a developer's RESPONDER_* or Pulumi backend must not leak into the run.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RESPONDER_", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"))
    }
    return {
        **inherited,
        "RESPONDER_HOST": "127.0.0.1",
        "RESPONDER_PORT": str(port),
        "RESPONDER_DATA_DIR": str(data_dir),
        "RESPONDER_PLAYBOOKS_DIR": str(PLAYBOOKS_DIR),
        "RESPONDER_PAGERDUTY_SECRETS": keys.pagerduty_secret,
        "RESPONDER_EVENTS_V2_ROUTING_KEYS": keys.routing_key,
        "RESPONDER_ALERTMANAGER_TOKEN": keys.alertmanager_token,
        "RESPONDER_API_TOKEN": keys.api_token,
        "RESPONDER_LOG_LEVEL": "WARNING",
        "RESPONDER_WORKERS": "2",
        # The orphan sweep lists the backend's stacks through the CLI: not during a fuzz run.
        "RESPONDER_ORPHAN_SWEEP_INTERVAL": "1000000000",
    }


@dataclass
class Tally:
    """Counts and the first examples of each distinct failure."""

    sent: int = 0
    by_kind: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    violations: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: list[tuple[str, Acknowledged]] = field(default_factory=list)

    def record(self, label: str, case: Case, status: str, problems: list[str]) -> None:
        self.sent += 1
        self.by_kind[case.kind][status] += 1
        for problem in problems:
            kind = _problem_kind(problem)
            self.violations[kind] += 1
            signature = (
                f"{case.kind} {case.method} {case.path.split('?')[0][:40]}: {_shape(problem)}"
            )
            entry = self.failures.setdefault(signature, {"count": 0, "examples": []})
            entry["count"] += 1
            if len(entry["examples"]) < EXAMPLES_PER_FAILURE:
                entry["examples"].append({"case": label, "problem": problem, **case.describe()})


def _problem_kind(problem: str) -> str:
    if problem.startswith("unanswered"):
        return "unanswered"
    if problem.startswith("status"):
        return "answers >= 500 other than 503"
    if "not a JSON object" in problem:
        return "answers not JSON"
    return "error answers amplified"


def _shape(problem: str) -> str:
    """A problem without its variable parts, so equal failures group together."""
    return re.sub(r"\d+", "N", problem[:120])


async def wait_ready(
    session: aiohttp.ClientSession, base: URL, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before it was ready")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(base / "readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("daemon not ready after 180 s")


def case_at(index: int, seed: int, keys: Keys) -> tuple[str, Case]:
    """Request `index` of a run: the issue-9 hazards first, then generated cases."""
    fixed = list(hazards(keys).items())
    if index < len(fixed):
        return f"hazard {fixed[index][0]}", fixed[index][1]
    return f"seed {seed} case {index}", any_case(random.Random(f"{seed}:{index}"), keys)


async def fuzz(
    base: URL, keys: Keys, args: argparse.Namespace, tally: Tally, deadline: float
) -> None:
    counter = iter(range(args.requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for index in counter:
            if time.monotonic() > deadline:
                return
            label, case = case_at(index, args.seed, keys)
            answer = await send(session, base, case, args.timeout)
            # A 503 (a store outage) is allowed and counted apart; any other 5xx is a violation.
            problems = violations(case, answer, allow_503=True)
            tally.record(label, case, str(answer.status or "unanswered"), problems)
            ack = acknowledged_by(case, answer)
            if ack is not None:
                tally.acknowledged.append((label, ack))
            if tally.sent % 5000 == 0:
                print(f"fuzz: {tally.sent} sent", file=sys.stderr, flush=True)

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))


async def readyz(base: URL) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(base / "readyz", timeout=aiohttp.ClientTimeout(total=30)) as r:
                return {"status": r.status, "answer": await r.json(content_type=None)}
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            return {"status": 0, "answer": f"{type(e).__name__}: {e}"}


def stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def log_findings(log: Path) -> dict[str, Any]:
    """Tracebacks the daemon logged: unhandled handler errors, dead tasks, protocol errors."""
    tracebacks: collections.Counter[str] = collections.Counter()
    unhandled = 0
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        if '"http.unhandled_error"' not in line:
            continue
        unhandled += 1
        with contextlib.suppress(ValueError):
            exception = str(json.loads(line).get("exception", ""))
            frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', exception)
            where = [f"{Path(f).name}:{n} {fn}" for f, n, fn in frames if "/responder/" in f]
            last = exception.strip().splitlines()[-1] if exception.strip() else ""
            last = re.sub(r"\\u[0-9a-f]{4}|\d+", "N", last)  # group equal errors of other data
            tracebacks[f"{last[:160]} at {' <- '.join(reversed(where[-3:]))}"] += 1
    return {
        "unhandled_errors": unhandled,
        "distinct_unhandled": [{"count": n, "error": k} for k, n in tracebacks.most_common()],
        "task_exception_never_retrieved": text.count("Task exception was never retrieved"),
        "aiohttp_error_handling_request": text.count("Error handling request"),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    keys = Keys()
    workdir = Path(tempfile.mkdtemp(prefix="responder-fuzz-"))
    data_dir, log = workdir / "data", workdir / "daemon.log"
    port = free_port()
    base = URL(f"http://127.0.0.1:{port}")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "responder", "serve"],
            env=daemon_env(data_dir, port, keys),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    tally = Tally()
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base, proc)
        started = time.monotonic()
        await fuzz(base, keys, args, tally, started + args.max_seconds)
        seconds = time.monotonic() - started
        ready = await readyz(base)
        alive = proc.poll() is None
    finally:
        exit_code = stop(proc)
    with contextlib.closing(open_store(data_dir / "responder.db")) as db:
        has = snapshot_lookup(db)
        lost = [(label, m) for label, ack in tally.acknowledged for m in missing(ack, has)]
    counts = collections.Counter[str]()
    for statuses in tally.by_kind.values():
        counts.update(statuses)
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.fuzz", *sys.argv[1:]]),
        "seed": args.seed,
        "requests": tally.sent,
        "requested": args.requests,
        "seconds": round(seconds, 1),
        "requests_per_second": round(tally.sent / seconds, 1) if seconds else None,
        "concurrency": args.concurrency,
        "timeout_per_request": args.timeout,
        "statuses": dict(sorted(counts.items())),
        "statuses_by_kind": {k: dict(sorted(v.items())) for k, v in sorted(tally.by_kind.items())},
        "answers_5xx_not_503": tally.violations["answers >= 500 other than 503"],
        "answers_503": counts["503"],
        "unanswered": tally.violations["unanswered"],
        "errors_not_json": tally.violations["answers not JSON"],
        "errors_amplified": tally.violations["error answers amplified"],
        "acknowledged": len(tally.acknowledged),
        "missing_from_store": len(lost),
        "missing_examples": [f"{label}: {m}" for label, m in lost[:10]],
        "ready_at_end": ready["status"] == 200 and alive,
        "readyz_at_end": ready,
        "daemon_exit_code": exit_code,
        "daemon_log": log_findings(log),
        "workdir": str(workdir),
        "failures": [
            {"signature": k, **v}
            for k, v in sorted(tally.failures.items(), key=lambda item: -item[1]["count"])
        ],
    }
    report["ok"] = (
        tally.sent >= args.requests and not tally.violations and not lost and report["ready_at_end"]
    )
    if report["ok"] and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        report["workdir"] = None
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=100_000, help="how many requests to send")
    parser.add_argument("--seed", type=int, default=9, help="generator seed (case i: seed:i)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="bound on the whole run")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and daemon log")
    parser.add_argument(
        "--show", type=int, metavar="INDEX", help="print one generated case, send nothing"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show is not None:
        label, case = case_at(args.show, args.seed, Keys())
        print(
            json.dumps({"case": label, **case.describe(limit=4000)}, indent=2, ensure_ascii=False)
        )
        return 0
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
