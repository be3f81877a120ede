"""A program whose one resource takes a second, with a secret nested in a map among its outputs
(and its config `x`, if set, as an output)."""

import pulumi

from tests.programs.slow import Slow


def pulumi_program() -> None:
    Slow("slow", 1.0)
    pulumi.export("nested", {"password": pulumi.Output.secret("nested-secret-value"), "port": 5432})
    pulumi.export("plain", "visible")
    x = pulumi.Config().get("x")
    if x is not None:
        pulumi.export("x", x)
