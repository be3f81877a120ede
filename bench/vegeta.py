"""vegeta, the compiled open-loop load generator: signed, distinct deliveries sent at a fixed rate.

Open loop: each delivery is sent at its scheduled time whether or not the earlier ones have been
answered (vegeta adds workers as needed), and its latency is counted from that scheduled time, so a
server that falls behind cannot hide its queue (no coordinated omission). vegeta is built from the Go
module proxy by scripts/ensure-vegeta into the virtualenv's bin.
"""

import asyncio
import base64
import csv
import io
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Delivery
from bench.wrk import core_for_load

VEGETA = Path(sys.executable).with_name("vegeta")


@dataclass
class OpenLoopRun:
    sent: int = 0
    ok: int = 0  # 2xx answers
    errors: int = 0  # non-2xx answers and transport errors
    latencies_ms: list[float] = field(default_factory=list)  # from each scheduled send
    acknowledged: list[str] = field(default_factory=list)  # delivery ids named by 2xx answers


def vegeta() -> str:
    found = VEGETA if VEGETA.exists() else shutil.which("vegeta")
    if found is None:
        raise RuntimeError("vegeta is missing: scripts/ensure-vegeta builds it into the virtualenv")
    return str(found)


def write_targets(path: Path, url: str, pool: list[Delivery]) -> None:
    """vegeta's JSON targets, one delivery a line, sent in this order."""
    with path.open("w") as out:
        for delivery in pool:
            target = {
                "method": "POST",
                "url": url,
                "body": base64.b64encode(delivery.body).decode(),
                "header": {name: [value] for name, value in delivery.headers().items()},
            }
            out.write(json.dumps(target) + "\n")


async def run_vegeta(
    url: str, pool: list[Delivery], rate: float, seconds: float, work: Path
) -> OpenLoopRun:
    """Send `rate` deliveries a second from `pool` for `seconds` (one delivery per send: the pool
    must hold enough); vegeta's targets and results are kept in `work`."""
    count = int(rate * seconds)
    if count > len(pool):
        raise ValueError(f"{count} sends need as many deliveries; the pool has {len(pool)}")
    targets, results = work / "vegeta-targets.jsonl", work / "vegeta-results.bin"
    write_targets(targets, url, pool[:count])
    argv = [vegeta(), "attack", "-format=json", f"-targets={targets}", f"-output={results}"]
    # A whole number of sends per second: vegeta's rate is a count per unit of time.
    argv += [f"-rate={count}/{seconds:g}s", f"-duration={seconds:g}s", "-timeout=30s"]
    core = core_for_load()
    await _run(argv if core is None else ["taskset", "-c", str(core), *argv])
    run = parse(await _run([vegeta(), "encode", "--to", "csv", str(results)]), rate)
    # vegeta stops at the duration even if it fell behind: the sends it never made are errors too.
    run.errors += max(0, count - run.sent)
    return run


async def _run(argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return out.decode()


def parse(results_csv: str, rate: float) -> OpenLoopRun:
    """vegeta's CSV results: timestamp (ns), code, latency (ns), bytes out, bytes in, error, body
    (base64), attack, seq, method, url, headers. Send `seq` was scheduled `seq / rate` seconds
    after the first one."""
    rows = sorted(csv.reader(io.StringIO(results_csv)), key=lambda row: int(row[8]))
    run = OpenLoopRun(sent=len(rows))
    if not rows:
        return run
    first = int(rows[0][0])
    for row in rows:
        sent, code, latency, seq = int(row[0]), int(row[1]), int(row[2]), int(row[8])
        late = max(0.0, (sent - first) / 1e9 - seq / rate)  # the generator's own delay in sending
        run.latencies_ms.append((late + latency / 1e9) * 1000)
        if not 200 <= code < 300:
            run.errors += 1
            continue
        run.ok += 1
        try:
            answer = json.loads(base64.b64decode(row[6]))
        except ValueError:  # not JSON (adnanh/webhook's answer, say): it names no delivery
            continue
        delivery_id = answer.get("delivery_id") if isinstance(answer, dict) else None
        if isinstance(delivery_id, str):
            run.acknowledged.append(delivery_id)
    return run
