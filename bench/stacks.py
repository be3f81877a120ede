"""End-to-end baselines: the raw Automation API floor and the original tutorial's per-request recipe."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
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


def floor_up(data_dir: Path, stack: str, target_url: str) -> float:
    """`up` alone, straight through the Automation API in this warm process: the time the CLI itself
    needs for the same program on the same backend. Config is set first and not timed."""
    from pulumi import automation as auto

    from burner_program import pulumi_program

    env = PulumiEnvironment.create(data_dir)
    os.environ.update(env.variables())
    work_dir = data_dir / "bench-floor-workspace"
    work_dir.mkdir(exist_ok=True)
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        pulumi_home=str(env.pulumi_home),
        secrets_provider="passphrase",
        project_settings=auto.ProjectSettings(name="burner", runtime="python"),
        pulumi_command=auto.PulumiCommand(str(env.pulumi_command.parent.parent)),
    )
    handle = auto.create_or_select_stack(
        stack_name=stack, project_name="burner", program=pulumi_program, opts=opts
    )
    handle.set_all_config(
        {
            k: auto.ConfigValue(v)
            for k, v in stack_config(stack, data_dir / "scratch", target_url).items()
        }
    )
    started = time.monotonic()
    handle.up()
    return time.monotonic() - started


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
