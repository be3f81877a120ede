"""`ctx.incident` is the same from every source, `ctx.incident_config()` is the program's config, and
the built-in playbooks use only these."""

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
import structlog

from playbooks.incident_lifecycle import (
    destroy_diagnostics,
    provision_diagnostics,
    refresh_diagnostics,
)
from responder.events import (
    PAGERDUTY_PAGE,
    Event,
    Incident,
    Link,
    Reference,
    event_from_dict,
    event_to_dict,
)
from responder.playbook import Context, StackNotFoundError, StepResult, on, playbook
from responder.sources import alertmanager, events_v2, pagerduty
from responder.store import JobStatus
from tests.helpers import Client, fixture_bytes, pd_event

MakeClient = Callable[..., Awaitable[Client]]
KEY = "0123456789abcdef0123456789abcdef"


def pd_note(incident: dict[str, str]) -> bytes:
    data = {"type": "incident_note", "id": "N1", "content": "db is back", "incident": incident}
    envelope = {
        "id": "e-note",
        "event_type": "incident.annotated",
        "resource_type": "incident",
        "occurred_at": "2026-03-14T09:30:00Z",
        "agent": None,
        "client": None,
        "data": data,
    }
    return json.dumps({"event": envelope}).encode()


NOTE_REF = {
    "id": "Q1X7KD4R9PVM2T",
    "type": "incident_reference",
    "summary": "checkout down",
    "html_url": "https://northwind.pagerduty.com/incidents/Q1X7KD4R9PVM2T",
}


def test_a_pagerduty_incident_links_its_page() -> None:
    incident = pagerduty.parse(fixture_bytes("pd_v3_incident_triggered.json")).incident
    assert incident is not None and not incident.partial
    assert incident.links == (
        Link("https://northwind.pagerduty.com/incidents/Q1X7KD4R9PVM2T", "PagerDuty incident"),
    )
    assert (incident.status, incident.urgency) == ("triggered", "high")
    assert incident.priority is not None and incident.priority.summary == "P1"


def test_a_pagerduty_note_carries_the_incident_id_as_a_partial_incident() -> None:
    incident = pagerduty.parse(pd_note(NOTE_REF)).incident
    assert incident is not None
    assert (incident.id, incident.title, incident.partial) == (
        NOTE_REF["id"],
        "checkout down",
        True,
    )
    assert incident.links == (Link(NOTE_REF["html_url"], "PagerDuty incident"),)
    assert (incident.status, incident.urgency, incident.service) == ("", "", None)  # unknown
    bare = pagerduty.parse(pd_note({"id": "Q2", "type": "incident_reference"})).incident
    assert bare is not None and (bare.id, bare.links, bare.partial) == ("Q2", (), True)


def am_notification(**alert: object) -> bytes:
    labels = {"alertname": "HighLatency", "service": "checkout", "severity": "critical"}
    firing = {"status": "firing", "labels": labels, "fingerprint": "4f2a9c1b7d3e5a60", **alert}
    return json.dumps(
        {
            "version": "4",
            "groupKey": "g",
            "status": "firing",
            "externalURL": "http://alertmanager.test",
            "alerts": [firing],
        }
    ).encode()


def test_an_alert_links_its_generator_and_alertmanager() -> None:
    [event] = alertmanager.parse(am_notification(generatorURL="http://prometheus.test/graph"))
    incident = event.incident
    assert incident is not None and not incident.partial
    assert incident.links == (
        Link("http://prometheus.test/graph", "alert source"),
        Link("http://alertmanager.test", "Alertmanager"),
    )
    assert (incident.status, incident.urgency, incident.severity) == (
        "triggered",
        "high",
        "critical",
    )
    assert incident.service is not None and incident.service.summary == "checkout"
    [bare] = alertmanager.parse(am_notification())
    assert bare.incident is not None
    assert bare.incident.links == (Link("http://alertmanager.test", "Alertmanager"),)


def test_an_events_v2_event_links_its_links_then_its_client() -> None:
    body = json.loads(fixture_bytes("events_v2_trigger.json"))
    incident = events_v2.parse(json.dumps({**body, "routing_key": KEY}).encode()).event.incident
    assert incident is not None and not incident.partial
    assert incident.links == (
        Link("https://grafana.northwind.example/d/chk01/checkout", "Checkout dashboard"),
        Link("https://runbooks.northwind.example/checkout-api/high-error-rate", "Runbook"),
        Link("https://monitoring.northwind.example/alerts/HighErrorRate", "Northwind Monitoring"),
    )
    plain = {"routing_key": KEY, "event_action": "acknowledge", "dedup_key": "d1"}
    plain["links"] = [{"href": "https://x.test"}]  # type: ignore[assignment]
    acknowledged = events_v2.parse(json.dumps(plain).encode()).event.incident
    assert acknowledged is not None and acknowledged.links == (Link("https://x.test"),)


def every_source_event() -> list[Event]:
    ev2 = {**json.loads(fixture_bytes("events_v2_trigger.json")), "routing_key": KEY}
    return [
        pagerduty.parse(fixture_bytes("pd_v3_incident_triggered.json")),
        pagerduty.parse(pd_note(NOTE_REF)),
        pagerduty.parse(fixture_bytes("pd_v3_pagey_ping.json")),
        *alertmanager.parse(am_notification(generatorURL="http://prometheus.test/graph")),
        events_v2.parse(json.dumps(ev2).encode()).event,
    ]


def test_events_of_every_source_round_trip_through_the_store_form() -> None:
    for event in every_source_event():
        stored = json.loads(json.dumps(event_to_dict(event)))
        assert event_from_dict(stored) == event


def old_form(event: Event) -> dict[str, Any]:
    """The dict the previous version stored for this event: no `links`, no `partial`."""
    stored: dict[str, Any] = json.loads(json.dumps(event_to_dict(event)))
    if stored["incident"]:
        del stored["incident"]["links"], stored["incident"]["partial"]
    return stored


def test_events_stored_by_the_previous_version_still_read() -> None:
    events = every_source_event()
    full, note, ping, alert, ev2 = (event_from_dict(old_form(e)) for e in events)
    # PagerDuty's read back exactly as parsed today: an `up` of a job queued before the upgrade
    # must not see its incident's context change.
    assert (full, note) == (events[0], events[1])
    assert full.incident is not None and not full.incident.partial
    assert note.incident is not None and note.incident.partial  # a note referred to its incident
    assert note.incident.id == NOTE_REF["id"]
    assert ping.incident is None
    assert alert.incident is not None and not alert.incident.partial
    assert alert.incident.links == (Link("http://prometheus.test/graph"),)  # its html_url then
    assert ev2.incident is not None and (ev2.incident.links, ev2.incident.partial) == ((), False)


async def test_a_job_stored_by_the_previous_version_is_still_read(make_client: MakeClient) -> None:
    @playbook(delay=600)
    @on("incident.annotated")
    async def later(ctx: Context) -> None:
        """Waits, scheduled, so the test can rewrite its stored event."""

    client = await make_client([later])
    assert (await client.deliver(pd_note(NOTE_REF), "old-note")).status == 202
    [job] = await client.wait_for_jobs(settled=(JobStatus.SCHEDULED,))
    with sqlite3.connect(client.store.path) as db:
        [(stored,)] = db.execute("SELECT event FROM jobs WHERE id = ?", (job.id,)).fetchall()
        old = json.loads(stored)
        del old["incident"]["links"], old["incident"]["partial"]
        db.execute("UPDATE jobs SET event = ? WHERE id = ?", (json.dumps(old), job.id))
    reread = await client.daemon.store.get_job(job.id)
    assert reread is not None and reread.event.incident is not None
    assert reread.event.incident.partial
    assert reread.event.incident.links == (Link(NOTE_REF["html_url"], PAGERDUTY_PAGE),)


class RecordingStack:
    """A stack handle that records what a playbook asked of it; `exists` says whether the backend
    has the stack (refresh and destroy of a missing one raise StackNotFoundError, as the runner's)."""

    name = "incident-Q1"

    def __init__(self, *, exists: bool = True) -> None:
        self.exists = exists
        self.calls: list[tuple[str, object]] = []

    def _record(self, step: str, argument: object = None, **details: object) -> StepResult:
        self.calls.append((step, argument))
        return StepResult(step=step, stack=self.name, duration=0.0, details=dict(details))

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        return self._record("set_config", dict(config))

    async def up(self) -> StepResult:
        self.exists = True
        return self._record("up")

    async def refresh(self) -> StepResult:
        if not self.exists:
            raise StackNotFoundError("no such stack", stack=self.name, step="refresh")
        return self._record("refresh")

    async def preview(self) -> StepResult:
        return self._record("preview")

    async def destroy(self, *, remove: bool = True, missing_ok: bool = False) -> StepResult:
        if not self.exists:
            if not missing_ok:
                raise StackNotFoundError("no such stack", stack=self.name, step="destroy")
            return self._record("destroy", remove, already_gone=True)
        self.exists = False
        return self._record("destroy", remove)

    async def outputs(self) -> StepResult:
        return self._record("outputs")

    async def recorded_outputs(self) -> dict[str, Any] | None:
        return None


def context(
    event: Event, stack: RecordingStack | None = None, **params: str
) -> tuple[Context, RecordingStack]:
    stack = stack or RecordingStack()
    ctx = Context(
        event=event,
        incident=event.incident,
        log=structlog.get_logger(),
        stack=stack,
        playbook="p",
        params=params,
    )
    return ctx, stack


def test_incident_config_is_what_the_burner_program_reads() -> None:
    event = pagerduty.parse(fixture_bytes("pd_v3_incident_triggered.json"))
    ctx, _ = context(event, target_url="http://t", scratch_root="/s", request="location")
    config = ctx.incident_config()
    assert set(config) == {"incident_id", "incident", "target_url"}  # never the scratch root
    assert (config["incident_id"], config["target_url"]) == ("Q1X7KD4R9PVM2T", "http://t")
    assert json.loads(str(config["incident"])) == {
        "title": "High 5xx error rate on checkout-api (7.3% over 5m)",
        "status": "triggered",
        "urgency": "high",
        "number": 4187,
        "priority": "P1",
        "service": "checkout-api (prod)",
        "incident_key": "prod-eu1/checkout-api/HighErrorRate",
        "html_url": "https://northwind.pagerduty.com/incidents/Q1X7KD4R9PVM2T",
        "links": [
            {
                "href": "https://northwind.pagerduty.com/incidents/Q1X7KD4R9PVM2T",
                "text": "PagerDuty incident",
            }
        ],
        "event_type": "incident.triggered",
    }
    assert ctx.incident_config(target_url="http://other", region="eu") == {
        **config,
        "target_url": "http://other",
        "region": "eu",
    }


def test_incident_config_without_an_incident_or_a_target() -> None:
    ctx, _ = context(Event(id="e9", source="manual", type="manual.p", resource_type="manual"))
    assert ctx.incident_config() == {"incident_id": "e9", "incident": "{}"}
    alert = alertmanager.parse(am_notification())[0]
    ctx, _ = context(alert)
    assert json.loads(str(ctx.incident_config()["incident"]))["service"] == "checkout"


async def test_provision_sets_the_incident_config_then_ups() -> None:
    event = pagerduty.parse(fixture_bytes("pd_v3_incident_triggered.json"))
    ctx, stack = context(event, target_url="http://t")
    await provision_diagnostics(ctx)
    assert stack.calls == [("set_config", ctx.incident_config()), ("up", None)]
    assert (provision_diagnostics.idle_ttl, provision_diagnostics.max_age) == (21600, 86400)


async def test_refresh_updates_a_full_incident_but_not_from_a_note() -> None:
    acknowledged = pagerduty.parse(pd_event("incident.acknowledged", "Q1"))
    ctx, stack = context(acknowledged)
    await refresh_diagnostics(ctx)
    assert [step for step, _ in stack.calls] == ["set_config", "refresh", "up"]
    assert json.loads(str(ctx.incident_config()["incident"]))["status"] == "acknowledged"

    ctx, stack = context(pagerduty.parse(pd_note(NOTE_REF)))
    await refresh_diagnostics(ctx)
    assert [step for step, _ in stack.calls] == ["refresh", "up"]  # the stack keeps its context
    assert refresh_diagnostics.coalesce


@pytest.mark.parametrize("event_body", [pd_event("incident.escalated", "Q1"), pd_note(NOTE_REF)])
async def test_refresh_provisions_a_missing_stack(event_body: bytes) -> None:
    ctx, stack = context(pagerduty.parse(event_body), RecordingStack(exists=False))
    await refresh_diagnostics(ctx)
    assert stack.calls[-2:] == [("set_config", ctx.incident_config()), ("up", None)]
    assert stack.exists


@pytest.mark.parametrize("exists", [True, False])
async def test_destroy_removes_the_stack_even_when_already_gone(exists: bool) -> None:
    ctx, stack = context(
        pagerduty.parse(pd_event("incident.resolved")), RecordingStack(exists=exists)
    )
    await destroy_diagnostics(ctx)
    assert stack.calls == [("destroy", True)] and not stack.exists
    assert destroy_diagnostics.allow_destroy and destroy_diagnostics.delay == 300
    assert destroy_diagnostics.cancel_on == ("incident.reopened", "incident.triggered")


def test_trigger_matching_reads_the_incident_of_every_source() -> None:
    @on("incident.*", service="checkout*", urgency="high")
    async def checkout(ctx: Context) -> None:
        """Fires for high-urgency checkout incidents."""

    pd, note, _ping, alert, ev2 = every_source_event()
    assert checkout.matches(pd) and checkout.matches(alert) and checkout.matches(ev2)
    assert not checkout.matches(note)  # a note names no service
    with_service = Incident(id="x", urgency="high", service=Reference("s", summary="checkout-2"))
    assert checkout.matches(
        Event("e", "x", "incident.triggered", "incident", incident=with_service)
    )
