"""What the HTTP handlers read from the app: the running daemon's parts, typed as the interfaces
they use. `responder.daemon` builds the parts; this package only handles HTTP."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from responder.config import Settings
from responder.health import StoreHealth
from responder.playbook import Playbook
from responder.stacks import StackOperations
from responder.store import Job, Store


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


class JobControl(Protocol):
    """The job runner, as the API drives it."""

    @property
    def health(self) -> StoreHealth: ...
    def notify(self) -> None: ...
    async def cancel(self, job_id: int) -> Job | None: ...


class Sweeper(Protocol):
    """The reaper, for a pass on demand (tests, tools) instead of on its timer."""

    async def run_once(self, *, sweep: bool = False, prune: bool = False) -> list[int]: ...


@dataclass
class Daemon:
    """The running daemon's parts, set under `DAEMON` once all have started. `ready` holds until
    they start stopping; `accepting` turns false as soon as the server starts shutting down."""

    settings: Settings
    store: Store
    ops: StackOperations
    runner: JobControl
    reaper: Sweeper
    credentials: Credentials
    playbook_order: list[Playbook]  # the operator's playbooks, in load order
    clock: Callable[[], float] = time.time
    accepting: bool = True
    ready: bool = False


DAEMON = web.AppKey("daemon", Daemon)
SETTINGS = web.AppKey("settings", Settings)
