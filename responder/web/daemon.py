"""The running daemon's parts, shared by every handler through one typed app key."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from responder.config import Settings
from responder.lifecycle import Reaper
from responder.logs import Redactor
from responder.playbook import Playbook
from responder.runner import Runner
from responder.stacks import StackOperations
from responder.store.sqlite import SQLiteStore


@dataclass
class Daemon:
    settings: Settings
    playbooks: dict[str, Playbook]
    store: SQLiteStore
    ops: StackOperations
    runner: Runner
    reaper: Reaper
    redactor: Redactor
    webhook_secrets: tuple[str, ...]
    api_token: str
    clock: Callable[[], float] = time.time
    accepting: bool = True
    ready: bool = False
    playbook_order: list[Playbook] = field(default_factory=list)


DAEMON = web.AppKey("daemon", Daemon)
SETTINGS = web.AppKey("settings", Settings)
