"""The playbook author API: `@on` triggers, `@playbook` options and `@manual` (see the README)."""

import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from responder.context import Context, StackHandle
from responder.events import Event, Incident, Link
from responder.stacks.errors import StackNotFoundError
from responder.stacks.interface import Secret
from responder.stacks.results import StepResult
from responder.triggers import Trigger

__all__ = [
    "DEFAULT_PROGRAM",
    "DEFAULT_PROJECT",
    "OPERATOR_PARAMS",
    "STACK_PREFIX",
    "Context",
    "Event",
    "Incident",
    "Link",
    "Playbook",
    "PlaybookError",
    "PlaybookFunc",
    "Secret",
    "StackHandle",
    "StackNotFoundError",
    "StepResult",
    "Trigger",
    "manual",
    "match",
    "on",
    "playbook",
    "stack_name_for",
]

DEFAULT_PROJECT = "burner"
DEFAULT_PROGRAM = "burner_program:pulumi_program"
# Run parameters only the operator sets: a playbook cannot let a manual run choose them.
OPERATOR_PARAMS = frozenset({"program", "scratch_root"})

STACK_PREFIX = "incident-"
# Ids kept verbatim in their stack name (the names stacks had before ids were hashed). No `.`, so
# a verbatim name never contains one and cannot equal a hashed name, which always does.
_VERBATIM_ID = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,78}[A-Za-z0-9_])?")
_READABLE_LENGTH = 40
_HASH_LENGTH = 16  # hex digits of SHA-256: 64 bits, so distinct ids never meet in practice


class PlaybookError(ValueError):
    """A playbook is declared wrongly."""


PlaybookFunc = Callable[[Context], Awaitable[None]]


@dataclass
class Playbook:
    """A decorated function with its triggers. Calling it runs the function."""

    name: str
    func: PlaybookFunc
    triggers: list[Trigger]
    project: str = DEFAULT_PROJECT
    program: str = DEFAULT_PROGRAM
    # Queued runs for the same stack collapse into the newest one (for idempotent refreshes).
    coalesce: bool = False
    # Destroy is refused unless the playbook says so: only stacks it owns may be torn down.
    allow_destroy: bool = False
    # Lifecycle of the stacks this playbook creates (seconds; None = no limit).
    idle_ttl: float | None = None  # destroy after this long without activity on the incident
    max_age: float | None = None  # destroy this long after creation, whatever the activity
    # Run this playbook's jobs `delay` seconds after the event; an event of a `cancel_on` type for the
    # same incident cancels the waiting job (e.g. destroy after a grace period unless reopened).
    delay: float = 0.0
    cancel_on: tuple[str, ...] = ()
    # Approval gates: a destroy, or an update whose preview replaces or deletes resources, waits in
    # `awaiting_approval` until POST /jobs/{id}/approve.
    approve_destroy: bool = False
    approve_changes: bool = False
    # The run parameters a manual run (POST /playbooks/{name}/run) may pass.
    params: tuple[str, ...] = ()
    # Runs only by hand (POST /playbooks/{name}/run): declared with `@manual`, never with a trigger.
    manual: bool = False
    file: Path | None = None
    # Options given explicitly by some decorator, so another one giving another value is refused.
    declared: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.func) or ""

    def matches(self, event: Event) -> bool:
        return any(trigger.matches(event) for trigger in self.triggers)

    def stack_name(self, event: Event) -> str:
        """The incident's stack: every playbook of a project acts on the same one per incident."""
        return stack_name_for(event.incident_id or event.id)

    async def __call__(self, ctx: Context) -> None:
        await self.func(ctx)


def stack_name_for(incident_id: str) -> str:
    """The incident's stack name: distinct ids get distinct names, each a valid Pulumi stack name.

    A plain id (letters, digits, `_`, inner `-`, at most 80 characters) is kept as it is. Any other
    id gets a readable part and a hash of the whole id after a `.`, which no plain name contains.
    """
    if _VERBATIM_ID.fullmatch(incident_id):
        return STACK_PREFIX + incident_id
    readable = re.sub(r"[^A-Za-z0-9_]+", "-", incident_id).strip("-")[:_READABLE_LENGTH]
    # surrogatepass: every str has a byte form, even one holding a lone surrogate.
    digest = hashlib.sha256(incident_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{STACK_PREFIX}{readable}.{digest[:_HASH_LENGTH]}"


def on(
    *events: str,
    source: str | None = None,
    service: str | None = None,
    urgency: str | None = None,
    priority: str | None = None,
    severity: str | None = None,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    when: Callable[[Event], bool] | None = None,
) -> Callable[[PlaybookFunc | Playbook], Playbook]:
    """Declare that the decorated async function runs for events matching these conditions.

    Only trigger conditions: what describes the playbook itself goes in `@playbook(...)`."""
    if not events or not all(isinstance(e, str) and e for e in events):
        raise PlaybookError("@on needs at least one event type, e.g. @on('incident.triggered')")
    try:
        pattern = re.compile(title) if title is not None else None
    except re.error as e:
        raise PlaybookError(f"title={title!r} is not a valid regular expression: {e}") from None
    if when is not None and not callable(when):
        raise PlaybookError("when= must be a function taking the event and returning a bool")
    trigger = Trigger(
        events=tuple(events),
        source=source,
        service=service,
        urgency=urgency,
        priority=priority,
        severity=severity,
        title=pattern,
        labels=tuple(sorted((labels or {}).items())),
        when=when,
    )

    def decorate(target: PlaybookFunc | Playbook) -> Playbook:
        playbook = _playbook_of(target)
        if playbook.manual:
            raise PlaybookError(_MANUAL_WITH_TRIGGER.format(name=playbook.name))
        playbook.triggers.insert(0, trigger)  # decorators apply bottom-up; keep reading order
        return playbook

    return decorate


def playbook(
    *,
    project: str | None = None,
    program: str | None = None,
    coalesce: bool | None = None,
    allow_destroy: bool | None = None,
    idle_ttl: float | None = None,
    max_age: float | None = None,
    delay: float | None = None,
    cancel_on: tuple[str, ...] | None = None,
    approve_destroy: bool | None = None,
    approve_changes: bool | None = None,
    params: tuple[str, ...] | None = None,
) -> Callable[[PlaybookFunc | Playbook], Playbook]:
    """Declare the playbook's options; above or below its `@on` / `@manual` decorators."""
    options = _options(
        project=project,
        program=program,
        coalesce=coalesce,
        allow_destroy=allow_destroy,
        idle_ttl=idle_ttl,
        max_age=max_age,
        delay=delay,
        cancel_on=cancel_on,
        approve_destroy=approve_destroy,
        approve_changes=approve_changes,
        params=params,
    )

    def decorate(target: PlaybookFunc | Playbook) -> Playbook:
        found = _playbook_of(target)
        _declare(found, options)
        return found

    return decorate


def manual(target: PlaybookFunc | Playbook) -> Playbook:
    """Declare a playbook that has no trigger: it runs only by hand (POST /playbooks/{name}/run)."""
    found = _playbook_of(target)
    if found.triggers:
        raise PlaybookError(_MANUAL_WITH_TRIGGER.format(name=found.name))
    found.manual = True
    return found


_MANUAL_WITH_TRIGGER = (
    "{name}: @manual and @on exclude each other: any playbook can be run by hand, @manual is for"
    " one that has no trigger"
)
_SECONDS = ("idle_ttl", "max_age", "delay")
_FLAGS = ("coalesce", "allow_destroy", "approve_destroy", "approve_changes")


def _options(**given: object) -> dict[str, object]:
    """The options actually given (None means not given), checked."""
    options = {name: value for name, value in given.items() if value is not None}
    for name, value in options.items():
        if name in _SECONDS and (
            not isinstance(value, int | float) or isinstance(value, bool) or value < 0
        ):
            raise PlaybookError(f"{name}= must be a number of seconds >= 0, not {value!r}")
        if name in _FLAGS and not isinstance(value, bool):
            raise PlaybookError(f"{name}= must be True or False, not {value!r}")
        if name in ("project", "program") and not (isinstance(value, str) and value):
            raise PlaybookError(f"{name}= must be a non-empty string, not {value!r}")
        if name == "cancel_on" and not (
            isinstance(value, tuple) and all(isinstance(e, str) and e for e in value)
        ):
            raise PlaybookError(f"cancel_on= must be a tuple of event types, not {value!r}")
    if "params" in options:
        _check_params(options["params"])
    return options


def _declare(playbook: Playbook, options: Mapping[str, object]) -> None:
    for name, value in options.items():
        if name in playbook.declared and playbook.declared[name] != value:
            raise PlaybookError(
                f"{playbook.name}: {name}= is given twice, as {playbook.declared[name]!r}"
                f" and {value!r}; give it once"
            )
        playbook.declared[name] = value
        setattr(playbook, name, value)


def _playbook_of(target: PlaybookFunc | Playbook) -> Playbook:
    return target if isinstance(target, Playbook) else _new_playbook(target)


def _check_params(params: object) -> None:
    if not isinstance(params, tuple) or not all(isinstance(p, str) and p for p in params):
        raise PlaybookError(f"params= must be a tuple of parameter names, not {params!r}")
    if reserved := sorted(OPERATOR_PARAMS.intersection(params)):
        raise PlaybookError(f"params= cannot include {reserved}: only the operator sets them")


def _new_playbook(func: PlaybookFunc) -> Playbook:
    # Checked at run time too: a playbook file is not type-checked before it is loaded.
    name: str = getattr(func, "__name__", repr(func))
    if not inspect.iscoroutinefunction(func):
        raise PlaybookError(f"{name} must be an `async def` function taking a Context")
    if len(inspect.signature(func).parameters) != 1:
        raise PlaybookError(f"{name} must take exactly one parameter (the Context)")
    return Playbook(name=name, func=func, triggers=[])


def match(playbooks: list[Playbook], event: Event) -> list[Playbook]:
    """Every playbook with a trigger matching the event, in load order."""
    return [p for p in playbooks if p.matches(event)]
