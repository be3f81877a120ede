"""End-to-end baselines (the raw Automation API floor, the original tutorial's per-request recipe),
and a census of the `pulumi` processes a provisioning starts."""

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import REPO
from responder.stacks import PulumiEnvironment

PULUMI_SDK = "pulumi==3.272.0"


def stack_config(incident: str, scratch: Path, target_url: str) -> dict[str, str]:
    """What the built-in provisioning playbook sets (the same program, the same resources)."""
    return {
        "incident_id": incident,
        "incident": json.dumps({"title": "bench"}),
        "scratch_root": str(scratch),
        "target_url": target_url,
    }


def floor_up(data_dir: Path, stack: str, target_url: str) -> tuple[float, float]:
    """`up` alone, straight through the Automation API in this warm process: the time the CLI itself
    needs for the same program on the same backend. Config is set first and not timed. Its wall
    time and CPU time (this process's, and that of the processes it started), s."""
    from pulumi import automation as auto

    from burner_program import pulumi_program

    env = PulumiEnvironment.create(data_dir)
    work_dir = data_dir / "bench-floor-workspace"
    work_dir.mkdir(exist_ok=True)
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        pulumi_home=str(env.pulumi_home),
        secrets_provider="passphrase",
        project_settings=auto.ProjectSettings(name="burner", runtime="python"),
        pulumi_command=auto.PulumiCommand(str(env.pulumi_command.parent.parent)),
    )
    # In this process's environment, as in the daemon's worker (the inline program reads the scratch
    # root from it), but only meanwhile: servers started later, and `pulumi version` run for the
    # report after the data dir is deleted, would inherit this data dir and recreate its pulumi-home.
    with environment(env.variables()):
        handle = auto.create_or_select_stack(
            stack_name=stack, project_name="burner", program=pulumi_program, opts=opts
        )
        handle.set_all_config(
            {
                k: auto.ConfigValue(v)
                for k, v in stack_config(stack, data_dir / "scratch", target_url).items()
            }
        )
        started, cpu = time.monotonic(), _cpu()
        handle.up()
        return time.monotonic() - started, _cpu() - cpu


def _cpu() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` set in os.environ while the block runs, the previous values restored after."""
    before = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


TUTORIAL = textwrap.dedent("""
    import json, sys
    from pulumi import automation as auto
    from burner_program import pulumi_program
    stack_name, work_dir, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    stack = auto.create_or_select_stack(stack_name=stack_name, project_name="burner", program=pulumi_program,
        opts=auto.LocalWorkspaceOptions(work_dir=work_dir, secrets_provider="passphrase",
            project_settings=auto.ProjectSettings(name="burner", runtime="python")))
    stack.set_all_config({k: auto.ConfigValue(v) for k, v in config.items()})
    stack.refresh()
    stack.up()
""")


def tutorial_request(data_dir: Path, stack: str, target_url: str) -> float:
    """What the original tutorial did for every request: a fresh virtualenv, pip install the program's
    requirements, create-or-select the stack, set config, refresh, up."""
    env = PulumiEnvironment.create(data_dir)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tutorial-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", PULUMI_SDK],
            check=True,
        )
        work_dir = Path(tmp) / "workspace"
        work_dir.mkdir()
        config = stack_config(stack, data_dir / "scratch", target_url)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                TUTORIAL,
                stack,
                str(work_dir),
                json.dumps(config),
            ],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **env.variables(), "PYTHONPATH": str(REPO)},
        )
    return time.monotonic() - started


class CliCensus(threading.Thread):
    """Records every `pulumi` CLI process whose PULUMI_HOME is `pulumi_home` (one daemon's), and when
    it started and ended, scanning /proc every few milliseconds (the shortest live ≈ 0.15 s). Used in
    an untimed run only: the scan takes CPU from what it watches."""

    def __init__(self, pulumi_home: Path) -> None:
        super().__init__(daemon=True)
        self.marker = f"PULUMI_HOME={pulumi_home}".encode()
        self.seen: dict[int, tuple[str, float]] = {}  # pid → (subcommand, started, s since boot)
        self.ended: dict[int, float] = {}
        self.others: set[int] = set()  # other pulumi processes (another daemon's, the floor's)
        self.stopping = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stopping.wait(0.004):
            now = time.clock_gettime(time.CLOCK_BOOTTIME)
            alive = set()
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    alive.add(int(entry.name))
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        self._look(int(entry.name), entry)
            for pid in self.seen.keys() - alive - self.ended.keys():
                self.ended[pid] = now

    def _look(self, pid: int, entry: Path) -> None:
        if pid in self.seen or pid in self.others:
            return
        # Read each time until it is a pulumi process: a child shows its parent's command line
        # between its fork and its exec.
        argv = (entry / "cmdline").read_bytes().split(b"\0")
        if not argv[0].endswith(b"/pulumi"):
            return
        if self.marker not in (entry / "environ").read_bytes().split(b"\0"):
            self.others.add(pid)
            return
        stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        if int(stat[1]) in self.seen:  # a plugin the CLI started, seen between fork and exec
            self.others.add(pid)
            return
        words = [a.decode() for a in argv[1:] if a and not a.startswith(b"-")]
        started = int(stat[19]) / self.tick
        self.seen[pid] = (" ".join(words[:2] if words[:1] != ["up"] else words[:1]), started)

    def stop(self) -> list[tuple[str, float, float]]:
        """(subcommand, started, lived), in seconds, of each process seen, in the order they
        started; `started` counts from the first one's start."""
        self.stopping.set()
        self.join()
        found = sorted(self.seen.items(), key=lambda item: (item[1][1], item[0]))
        first = found[0][1][1] if found else 0.0
        return [
            (what, started - first, self.ended.get(pid, started) - started)
            for pid, (what, started) in found
        ]
