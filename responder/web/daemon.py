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


@dataclass(frozen=True)
class Credentials:
    """What callers must present: configured, or generated once into the data dir (mode 0600)."""

    pagerduty_secrets: tuple[str, ...]
    events_v2_routing_keys: tuple[str, ...]
    alertmanager_token: str
    api_token: str

    def all(self) -> tuple[str, ...]:
        return (
            *self.pagerduty_secrets,
            *self.events_v2_routing_keys,
            self.alertmanager_token,
            self.api_token,
        )


@dataclass
class Daemon:
    settings: Settings
    playbooks: dict[str, Playbook]
    store: SQLiteStore
    ops: StackOperations
    runner: Runner
    reaper: Reaper
    redactor: Redactor
    credentials: Credentials
    clock: Callable[[], float] = time.time
    accepting: bool = True
    ready: bool = False
    playbook_order: list[Playbook] = field(default_factory=list)


DAEMON = web.AppKey("daemon", Daemon)
SETTINGS = web.AppKey("settings", Settings)
