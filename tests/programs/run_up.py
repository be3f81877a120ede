"""A stand-in for the daemon, for tests that kill it: sets a stack's config and runs `up`.

Usage: python -m tests.programs.run_up DATA_DIR PROJECT STACK PROGRAM KEY=VALUE...
"""

import asyncio
import sys
from pathlib import Path

from responder.stacks import PulumiEnvironment, PulumiOperations, StackTarget


async def main(data_dir: str, project: str, stack: str, program: str, *config: str) -> None:
    ops = PulumiOperations(PulumiEnvironment.create(Path(data_dir)), kill_grace=3, warm_workers=0)
    await ops.start()
    target = StackTarget(stack, project, program)
    await ops.up(target, config=dict(item.split("=", 1) for item in config))
    await ops.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
