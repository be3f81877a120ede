"""The playbook author API: `@on(...)` triggers declared beside an async function taking a `Context`.

    from responder.playbook import Context, on

    @on("incident.triggered", service="checkout-*", urgency="high")
    async def provision(ctx: Context) -> None:
        \"\"\"Bring up the incident's diagnostics stack.\"\"\"
        await ctx.stack.set_config({"target_url": "https://checkout.example/health"})
        await ctx.stack.up()

Stack several `@on` decorators to fire on any of them. Options that describe the playbook rather than
a trigger (project, program, coalesce, allow_destroy, lifecycle, approval options and params) may be
given on any one of them; giving one option two different values is a declaration error.
"""

import fnmatch
import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from responder.events import Event, Incident
from responder.stacks.results import StepResult

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


class StackHandle(Protocol):
    """The incident's burner stack, as a playbook sees it. Every call is recorded as a job step."""

    name: str

    async def set_config(self, config: Mapping[str, object]) -> StepResult: ...
    async def up(self) -> StepResult: ...
    async def refresh(self) -> StepResult: ...
    async def preview(self) -> StepResult: ...
    async def destroy(self, *, remove: bool = True) -> StepResult: ...
    async def outputs(self) -> StepResult: ...


@dataclass
class Context:
    """What a playbook run receives."""

    event: Event
    incident: Incident | None
    log: structlog.stdlib.BoundLogger
    stack: StackHandle
    playbook: str
    job_id: int | None = None
    # Operator defaults (target_url, scratch_root) overlaid with the playbook's declared run params.
    params: dict[str, str] = field(default_factory=dict)


PlaybookFunc = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Trigger:
    """One condition set; every given field must match. Globs for names, a regex for the title."""

    events: tuple[str, ...]
    source: str | None = None
    service: str | None = None
    urgency: str | None = None
    priority: str | None = None
    severity: str | None = None
    title: re.Pattern[str] | None = None
    labels: tuple[tuple[str, str], ...] = ()
    when: Callable[[Event], bool] | None = None

    def matches(self, event: Event) -> bool:
        if not any(fnmatch.fnmatchcase(event.type, pattern) for pattern in self.events):
            return False
        if self.source and not fnmatch.fnmatchcase(event.source, self.source):
            return False
        incident = event.incident
        checks: list[tuple[str | None, tuple[str, ...]]] = [
            (self.service, incident.service_names if incident else ()),
            (self.urgency, (incident.urgency,) if incident else ()),
            (self.priority, (incident.priority.summary,) if incident and incident.priority else ()),
            (self.severity, (incident.severity,) if incident else ()),
        ]
        for pattern, values in checks:
            if pattern and not any(fnmatch.fnmatchcase(v, pattern) for v in values):
                return False
        if self.title and not (incident and self.title.search(incident.title)):
            return False
        labels = incident.labels if incident else {}
        if any(k not in labels or not fnmatch.fnmatchcase(labels[k], v) for k, v in self.labels):
            return False
        return self.when is None or bool(self.when(event))

    def describe(self) -> str:
        parts = [",".join(self.events)]
        for name in ("source", "service", "urgency", "priority", "severity"):
            if value := getattr(self, name):
                parts.append(f"{name}={value}")
        if self.title:
            parts.append(f"title=/{self.title.pattern}/")
        parts += [f"labels.{k}={v}" for k, v in self.labels]
        if self.when:
            parts.append(f"when={getattr(self.when, '__name__', 'predicate')}")
        return " ".join(parts)


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
    file: Path | None = None
    # Options given explicitly by some `@on`, so a second `@on` giving another value is refused.
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
    """Declare that the decorated async function runs for events matching these conditions."""
    if not events or not all(isinstance(e, str) and e for e in events):
        raise PlaybookError("@on needs at least one event type, e.g. @on('incident.triggered')")
    try:
        pattern = re.compile(title) if title is not None else None
    except re.error as e:
        raise PlaybookError(f"title={title!r} is not a valid regular expression: {e}") from None
    if when is not None and not callable(when):
        raise PlaybookError("when= must be a function taking the event and returning a bool")
    for name, seconds in (("idle_ttl", idle_ttl), ("max_age", max_age), ("delay", delay)):
        if seconds is not None and (not isinstance(seconds, int | float) or seconds < 0):
            raise PlaybookError(f"{name}= must be a number of seconds >= 0, not {seconds!r}")
    if params is not None:
        _check_params(params)
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
        playbook = target if isinstance(target, Playbook) else _new_playbook(target)
        playbook.triggers.insert(0, trigger)  # decorators apply bottom-up; keep reading order
        options = {
            "project": project,
            "program": program,
            "coalesce": coalesce,
            "allow_destroy": allow_destroy,
            "idle_ttl": idle_ttl,
            "max_age": max_age,
            "delay": delay,
            "cancel_on": cancel_on,
            "approve_destroy": approve_destroy,
            "approve_changes": approve_changes,
            "params": params,
        }
        for name, value in options.items():
            if value is None:
                continue
            if name in playbook.declared and playbook.declared[name] != value:
                raise PlaybookError(
                    f"{playbook.name}: {name}= is given twice, as {playbook.declared[name]!r}"
                    f" and {value!r}; give it on one @on only"
                )
            playbook.declared[name] = value
            setattr(playbook, name, value)
        return playbook

    return decorate


def _check_params(params: object) -> None:
    if not isinstance(params, tuple) or not all(isinstance(p, str) and p for p in params):
        raise PlaybookError(f"params= must be a tuple of parameter names, not {params!r}")
    if reserved := sorted(OPERATOR_PARAMS.intersection(params)):
        raise PlaybookError(f"params= cannot include {reserved}: only the operator sets them")


def _new_playbook(func: Any) -> Playbook:
    if not inspect.iscoroutinefunction(func):
        name = getattr(func, "__name__", repr(func))
        raise PlaybookError(f"{name} must be an `async def` function taking a Context")
    if len(inspect.signature(func).parameters) != 1:
        raise PlaybookError(f"{func.__name__} must take exactly one parameter (the Context)")
    return Playbook(name=func.__name__, func=func, triggers=[])


def match(playbooks: list[Playbook], event: Event) -> list[Playbook]:
    """Every playbook with a trigger matching the event, in load order."""
    return [p for p in playbooks if p.matches(event)]
