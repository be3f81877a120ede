"""The benchmark suite's smoke run: every script works end to end (no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.pulumi


def test_bench_smoke_run_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    for heading in ("## Intake", "## End to end", "## Concurrency", "## Footprint"):
        assert heading in report
    assert (
        "missing from its store afterwards: **0**" in report
    )  # every acknowledged delivery is stored
    assert "Errors: responder 0" in report
