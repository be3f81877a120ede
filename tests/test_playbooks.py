"""The playbook API: triggers, discovery errors, and the `check`, `playbooks` and `replay` commands."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from responder.events import Event, Incident, Reference
from responder.playbook import Context, PlaybookError, match, on
from responder.playbook_loader import PlaybookLoadError, load_playbooks
from tests.helpers import FIXTURES, REPO


def incident_event(event_type: str = "incident.triggered", **incident: object) -> Event:
    fields: dict[str, object] = {
        "id": "Q1",
        "title": "High 5xx error rate on checkout-api",
        "urgency": "high",
        "service": Reference("PK3N8QZ", summary="checkout-api (prod)"),
        "priority": Reference("PP1", summary="P1"),
    }
    fields.update(incident)
    return Event(
        id="e1",
        source="pagerduty",
        type=event_type,
        resource_type="incident",
        incident=Incident(**fields),  # type: ignore[arg-type]
    )


async def noop(ctx: Context) -> None:
    """Does nothing."""


@pytest.mark.parametrize(
    ("kwargs", "event", "expected"),
    [
        ({}, incident_event(), True),
        ({}, incident_event("incident.resolved"), False),
        ({"service": "checkout-*"}, incident_event(), True),
        ({"service": "PK3N8QZ"}, incident_event(), True),
        ({"service": "billing-*"}, incident_event(), False),
        ({"urgency": "low"}, incident_event(), False),
        ({"priority": "P1"}, incident_event(), True),
        ({"priority": "P2"}, incident_event(priority=None), False),
        ({"title": r"5xx.*checkout"}, incident_event(), True),
        ({"title": r"^Disk"}, incident_event(), False),
        ({"source": "alertmanager"}, incident_event(), False),
        ({"severity": "critical"}, incident_event(severity="critical"), True),
        ({"labels": {"team": "pay*"}}, incident_event(labels={"team": "payments"}), True),
        ({"labels": {"team": "pay*"}}, incident_event(labels={}), False),
        ({"when": lambda e: e.incident.number == 7}, incident_event(number=7), True),
        ({"when": lambda e: e.incident.number == 7}, incident_event(number=8), False),
    ],
)
def test_trigger_matching(kwargs: dict[str, object], event: Event, expected: bool) -> None:
    playbook = on("incident.triggered", **kwargs)(noop)  # type: ignore[arg-type]
    assert playbook.matches(event) is expected


def test_stacked_triggers_and_several_playbooks_per_event() -> None:
    first = on("incident.acknowledged")(on("incident.triggered", urgency="high")(noop))
    assert [t.events for t in first.triggers] == [
        ("incident.acknowledged",),
        ("incident.triggered",),
    ]

    async def other(ctx: Context) -> None:
        """Another."""

    second = on("incident.*")(other)
    assert [p.name for p in match([first, second], incident_event())] == ["noop", "other"]
    assert [p.name for p in match([first, second], incident_event("incident.resolved"))] == [
        "other"
    ]


def test_declaration_errors() -> None:
    with pytest.raises(PlaybookError, match="async def"):
        on("incident.triggered")(lambda ctx: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(PlaybookError, match="at least one event type"):
        on()
    with pytest.raises(PlaybookError, match="not a valid regular expression"):
        on("incident.triggered", title="(")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import nonexistent_module_xyz\n", "broken.py: line 1: ModuleNotFoundError"),
        (
            "from responder.playbook import on\n@on('incident.triggered', title='[')\nasync def p(ctx): pass\n",
            "broken.py: line 2: title='\\[' is not a valid regular expression",
        ),
        (
            "from responder.playbook import manual, playbook\n@playbook(program='nope_pkg_xyz:main')\n@manual\nasync def p(ctx): pass\n",
            "broken.py: playbook 'p': program module 'nope_pkg_xyz' cannot be imported",
        ),
        (  # its package missing: finding the module imports the package, which raised
            "from responder.playbook import manual, playbook\n@playbook(program='nope_pkg_xyz.mod:main')\n@manual\nasync def p(ctx): pass\n",
            "broken.py: playbook 'p': program module 'nope_pkg_xyz.mod' cannot be imported",
        ),
    ],
)
def test_loader_errors_name_file_playbook_and_problem(
    tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "broken.py").write_text(source)
    with pytest.raises(PlaybookLoadError, match=message):
        load_playbooks(tmp_path)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    code = (
        "from responder.playbook import on\n@on('incident.triggered')\nasync def same(ctx): pass\n"
    )
    (tmp_path / "a.py").write_text(code)
    (tmp_path / "b.py").write_text(code)
    with pytest.raises(
        PlaybookLoadError, match=r"b\.py: playbook 'same': name already used in .*a\.py"
    ):
        load_playbooks(tmp_path)


def test_builtin_playbooks_cover_the_lifecycle() -> None:
    playbooks = load_playbooks(REPO / "playbooks")
    fired = {
        t: [p.name for p in match(playbooks, incident_event(t))]
        for t in (
            "incident.triggered",
            "incident.reopened",
            "incident.acknowledged",
            "incident.escalated",
            "incident.priority_updated",
            "incident.annotated",
            "incident.resolved",
        )
    }
    assert fired == {
        "incident.triggered": ["provision_diagnostics"],
        "incident.reopened": ["provision_diagnostics"],
        "incident.acknowledged": ["refresh_diagnostics"],
        "incident.escalated": ["refresh_diagnostics"],
        "incident.priority_updated": ["refresh_diagnostics"],
        "incident.annotated": ["refresh_diagnostics"],
        "incident.resolved": ["destroy_diagnostics"],
    }


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "responder", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_check_and_playbooks_commands(tmp_path: Path) -> None:
    ok = run_cli("check")
    assert ok.returncode == 0 and "4 playbooks loaded" in ok.stdout
    listing = run_cli("playbooks")
    assert (
        "provision_diagnostics" in listing.stdout
        and "on incident.triggered,incident.reopened" in listing.stdout
    )
    assert "Provision the incident's diagnostics stack" in listing.stdout
    (tmp_path / "bad.py").write_text("raise RuntimeError('nope')\n")
    bad = run_cli("check", env={"RESPONDER_PLAYBOOKS_DIR": str(tmp_path)})
    assert bad.returncode == 2 and "bad.py: line 1: RuntimeError: nope" in bad.stderr
    config = run_cli("check", env={"RESPONDER_PORT": "eighty"})
    assert (
        config.returncode == 2 and "RESPONDER_PORT" in config.stderr and "'eighty'" in config.stderr
    )


@pytest.mark.pulumi
def test_replay_previews_without_changing_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_cli(
        "replay",
        str(FIXTURES / "pd_v3_incident_triggered.json"),
        env={"RESPONDER_DATA_DIR": str(data_dir)},
    )
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    assert report["playbook"] == "provision_diagnostics" and report["outcome"] == "previewed"
    assert report["plans"] == [{"instead_of": "up", "changes": {"create": 2}}]
    assert not data_dir.exists()  # the real data dir was never touched
    resolved = run_cli(
        "replay",
        str(FIXTURES / "pd_v3_incident_resolved.json"),
        env={"RESPONDER_DATA_DIR": str(data_dir)},
    )
    assert json.loads(resolved.stdout)[0]["plans"] == [
        {"instead_of": "destroy", "would": "destroy every resource and remove the stack"}
    ]
