"""A deliberately slow program: its one resource takes `sleep_seconds` to create."""

import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class _SlowProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        time.sleep(float(props["sleep_seconds"]))
        return CreateResult(id_="slow", outs=props)


class Slow(Resource, module="tests", name="Slow"):
    def __init__(self, name: str, sleep_seconds: float) -> None:
        super().__init__(_SlowProvider(), name, {"sleep_seconds": sleep_seconds})


def pulumi_program() -> None:
    sleep = float(pulumi.Config().get("sleep_seconds") or "0")
    Slow("slow", sleep)
    pulumi.export("slept", sleep)
