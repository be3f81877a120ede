"""A secret stack output, then, once `started_file` is set, the stubborn resource (see stubborn.py):
a stack whose state holds a secret when an operation is stopped mid-create and its stack repaired."""

import pulumi

from tests.programs.stubborn import Stubborn


def pulumi_program() -> None:
    config = pulumi.Config()
    pulumi.export("token", config.require_secret("token"))
    started = config.get("started_file")
    if started:
        Stubborn("stubborn", started, float(config.require("sleep_seconds")))
