"""A stand-in for the daemon, for tests that kill it: sets a stack's config and runs `up`.

Usage: python -m tests.programs.run_up DATA_DIR PROJECT STACK PROGRAM KEY=VALUE...
"""

import asyncio
import sys
from pathlib import Path

from responder.stacks import PulumiEnvironment, StackOperations


async def main(data_dir: str, project: str, stack: str, program: str, *config: str) -> None:
    ops = StackOperations(PulumiEnvironment.create(Path(data_dir)), kill_grace=3, warm_workers=0)
    await ops.start()
    target = ops.stack(stack, project=project, program=program)
    await target.set_config(dict(item.split("=", 1) for item in config))
    await target.up()
    await ops.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
