"""Trigger conditions: which events fire a playbook. Globs for names, a regex for the title."""

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

from responder.events import Event


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
