"""Messages between the daemon and a stack worker process: requests in, JSON lines out.

Each request arrives on the worker's stdin as one JSON line. The worker answers with JSON lines on
its protocol stream, each with a `kind`:
  {"kind": "event", "step": ..., "event": {...}}        a Pulumi engine event, secrets already masked
  {"kind": "done", "step": ..., "result": {...}}        a step succeeded
  {"kind": "error", "step": ..., "error": KIND, "message": ...}   a step failed; no further steps run
  {"kind": "ready", "step": ""}      the request ended cleanly; the worker waits for another
A worker that does not say `ready` exits after the request. Its environment carries the daemon's pid
and the grace between SIGTERM and SIGKILL.
"""

import json
from typing import Any, Literal, NotRequired, TypedDict

from responder.stacks.interface import Config, Secret, check_config

PARENT_VARIABLE = "RESPONDER_WORKER_PARENT"
GRACE_VARIABLE = "RESPONDER_KILL_GRACE"

StepName = Literal[
    "set_config",
    "refresh",
    "preview",
    "preview_destroy",
    "list_stacks",
    "up",
    "destroy",
    "outputs",
    "repair",
    "export",
]


class ConfigValue(TypedDict):
    value: str
    secret: bool


class Step(TypedDict):
    op: StepName
    config: NotRequired[dict[str, ConfigValue]]
    remove: NotRequired[bool]
    create: NotRequired[bool]
    path: NotRequired[str]


class Request(TypedDict):
    project: str
    stack: str
    program: str  # "module:function"
    work_dir: str
    pulumi_command: str
    pulumi_version: str
    steps: list[Step]
    tags: NotRequired[dict[str, str]]  # set once, when a step creates the stack
    exists: NotRequired[bool]  # the daemon knows the stack exists: skip `pulumi stack select`


class Message(TypedDict):
    kind: Literal["event", "done", "error", "ready"]
    step: str
    event: NotRequired[dict[str, Any]]
    result: NotRequired[dict[str, Any]]
    error: NotRequired[str]  # an ErrorKind
    message: NotRequired[str]


def config_values(config: Config) -> dict[str, ConfigValue]:
    """The config as the worker takes it: strings as they are, anything else JSON-encoded. Checked
    first (see `check_config`)."""
    check_config(config)
    return {
        key: {
            "value": value if isinstance(value, str) else json.dumps(value),
            "secret": isinstance(value, Secret),
        }
        for key, value in config.items()
    }
