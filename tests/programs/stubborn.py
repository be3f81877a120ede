"""A program whose one resource ignores SIGTERM while it is created: only SIGKILL ends its provider.

Config: `started_file` (written with the provider's pid when the create begins), `sleep_seconds`.
"""

import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class _StubbornProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        # Through libc: this runs on a gRPC thread, where signal.signal refuses to work.
        libc = ctypes.CDLL(None)
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(props["started_file"]).write_text(str(os.getpid()))
        time.sleep(float(props["sleep_seconds"]))
        return CreateResult(id_="stubborn", outs=props)


class Stubborn(Resource, module="tests", name="Stubborn"):
    def __init__(self, name: str, started_file: str, sleep_seconds: float) -> None:
        props = {"started_file": started_file, "sleep_seconds": sleep_seconds}
        super().__init__(_StubbornProvider(), name, props)


def pulumi_program() -> None:
    config = pulumi.Config()
    Stubborn("stubborn", config.require("started_file"), float(config.require("sleep_seconds")))
