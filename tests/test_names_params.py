"""Playbooks declare the run params a manual run may pass; options conflict loudly; built-ins use them."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from playbooks.diagnostics import host_diagnostics
from responder.events import Event, Incident
from responder.playbook import Context, PlaybookError, on, playbook
from responder.playbook_loader import PlaybookLoadError, load_playbooks
from responder.stacks.results import StepResult
from tests.helpers import REPO


async def noop(ctx: Context) -> None:
    """Does nothing."""


def test_params_are_declared_on_the_playbook() -> None:
    assert on("x")(noop).params == ()
    assert playbook(params=("request", "region"))(on("x")(noop)).params == ("request", "region")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (("scratch_root",), "cannot include \\['scratch_root'\\]"),
        (("request", "program"), "cannot include \\['program'\\]"),
        ("request", "must be a tuple of parameter names"),
        (("",), "must be a tuple of parameter names"),
    ],
)
def test_params_the_operator_owns_or_malformed_are_refused(params: object, message: str) -> None:
    with pytest.raises(PlaybookError, match=message):
        playbook(params=params)  # type: ignore[arg-type]


def test_stacked_decorators_combine_options_but_refuse_conflicting_values() -> None:
    combined = playbook(coalesce=True)(on("a")(playbook(project="p", params=("request",))(noop)))
    assert (combined.coalesce, combined.project, combined.params) == (True, "p", ("request",))
    assert playbook(project="p")(playbook(project="p")(noop)).project == "p"  # same value twice
    with pytest.raises(PlaybookError, match=r"noop: project= is given twice, as 'q' and 'p'"):
        playbook(project="p")(playbook(project="q")(noop))
    with pytest.raises(PlaybookError, match="allow_destroy="):
        playbook(allow_destroy=False)(on("a")(playbook(allow_destroy=True)(noop)))


def test_the_loader_names_the_file_and_line_of_a_conflict(tmp_path: Path) -> None:
    (tmp_path / "twice.py").write_text(
        "from responder.playbook import on, playbook\n"
        "@playbook(delay=60)\n"
        "@on('a')\n"
        "@playbook(delay=30)\n"
        "async def p(ctx): pass\n"
    )
    with pytest.raises(PlaybookLoadError, match=r"twice\.py: line 2: p: delay= is given twice"):
        load_playbooks(tmp_path)


def test_builtin_playbooks_declare_only_what_they_accept() -> None:
    declared = {p.name: p.params for p in load_playbooks(REPO / "playbooks")}
    assert declared == {
        "host_diagnostics": ("request",),
        "provision_diagnostics": (),
        "refresh_diagnostics": (),
        "destroy_diagnostics": (),
    }


class RecordingStack:
    """A stack handle that records what the playbook asked of it."""

    name = "incident-manual"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def _record(self, step: str) -> StepResult:
        self.calls.append(step)
        return StepResult(step=step, stack=self.name, duration=0.0)

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        return await self._record("set_config")

    async def up(self) -> StepResult:
        return await self._record("up")

    async def refresh(self) -> StepResult:
        return await self._record("refresh")

    async def preview(self) -> StepResult:
        return await self._record("preview")

    async def destroy(self, *, remove: bool = True, missing_ok: bool = False) -> StepResult:
        return await self._record("destroy")

    async def outputs(self) -> StepResult:
        return await self._record("outputs")

    async def recorded_outputs(self) -> dict[str, Any] | None:
        return None


def context(params: dict[str, str], stack: RecordingStack | None = None) -> Context:
    event = Event(
        id="e1",
        source="manual",
        type="manual.host_diagnostics",
        resource_type="manual",
        incident=Incident(id="Q1", title="t"),
    )
    return Context(
        event=event,
        incident=event.incident,
        log=structlog.get_logger(),
        stack=stack or RecordingStack(),
        playbook="p",
        params=params,
    )


async def test_host_diagnostics_refuses_a_request_it_cannot_report() -> None:
    stack = RecordingStack()
    with pytest.raises(ValueError, match="request must be one of \\['timezone', 'location'\\]"):
        await host_diagnostics(context({"request": "../../etc", "scratch_root": "/s"}, stack))
    assert stack.calls == []  # refused before touching the stack


def test_the_lifecycle_config_takes_only_the_probe_target_from_params() -> None:
    params = {"scratch_root": "/s", "target_url": "http://t", "request": "location", "x": "y"}
    config = context(params).incident_config()
    assert {k: config[k] for k in config if k not in ("incident_id", "incident")} == {
        "target_url": "http://t",
    }
