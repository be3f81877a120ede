"""A program for the multi-node tests: one slow resource, and a secret config value it exports."""

import pulumi

from tests.programs.slow import Slow


def pulumi_program() -> None:
    config = pulumi.Config()
    sleep = float(config.get("sleep_seconds") or "0")
    Slow("slow", sleep)
    pulumi.export("slept", sleep)
    pulumi.export("token", config.require_secret("token"))  # needs the stack's config and salt
