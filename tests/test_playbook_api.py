"""The author API: `@playbook` options apart from `@on` triggers, `@manual`, and the README's example."""

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from responder.playbook import Context, Playbook, PlaybookError, manual, match, on, playbook
from responder.playbook_loader import PlaybookLoadError, load_playbooks
from responder.sources import pagerduty
from responder.store import JobStatus
from tests.fakes import FakeOperations
from tests.helpers import API_TOKEN, REPO, Client, FakeClock, pd_event

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def noop(ctx: Context) -> None:
    """Does nothing."""


def test_options_and_triggers_combine_in_either_order() -> None:
    below = playbook(allow_destroy=True, delay=5)(on("incident.resolved")(noop))
    above = on("incident.resolved")(playbook(allow_destroy=True, delay=5)(noop))
    for declared in (below, above):
        assert (declared.allow_destroy, declared.delay, declared.coalesce) == (True, 5, False)
        assert [t.events for t in declared.triggers] == [("incident.resolved",)]


@pytest.mark.parametrize(
    "declare",
    [
        lambda: playbook(delay=60)(playbook(delay=30)(noop)),
        lambda: playbook(delay=60)(on("a")(playbook(delay=30)(noop))),
    ],
    ids=["playbook twice", "around a trigger"],
)
def test_one_option_given_two_values_is_refused(declare: Callable[[], Playbook]) -> None:
    with pytest.raises(PlaybookError, match=r"noop: delay= is given twice, as 30 and 60"):
        declare()


def test_the_same_value_twice_is_accepted() -> None:
    declared = playbook(project="p", delay=5)(on("a")(playbook(project="p", delay=5.0)(noop)))
    assert (declared.project, declared.delay) == ("p", 5)


def test_on_takes_trigger_conditions_only() -> None:
    with pytest.raises(TypeError, match="delay"):
        on("a", delay=30)(noop)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay= must be a number of seconds >= 0"),
        ({"idle_ttl": "1h"}, "idle_ttl= must be a number of seconds"),
        ({"max_age": True}, "max_age= must be a number of seconds"),
        ({"coalesce": "yes"}, "coalesce= must be True or False"),
        ({"project": ""}, "project= must be a non-empty string"),
        ({"cancel_on": "incident.reopened"}, "cancel_on= must be a tuple of event types"),
        ({"params": ("scratch_root",)}, "cannot include \\['scratch_root'\\]"),
    ],
)
def test_malformed_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(PlaybookError, match=message):
        playbook(**options)  # type: ignore[arg-type]


def write(directory: Path, source: str) -> Path:
    path = directory / "authored.py"
    path.write_text(source)
    return path


def test_an_option_left_on_on_points_to_playbook(tmp_path: Path) -> None:
    write(
        tmp_path,
        "from responder.playbook import Context, on\n\n\n"
        '@on("incident.resolved", delay=300)\n'
        "async def later(ctx: Context) -> None: ...\n",
    )
    with pytest.raises(PlaybookLoadError) as refused:
        load_playbooks(tmp_path)
    assert "authored.py: line 4:" in str(refused.value)
    assert "delay= is a playbook option: give it with @playbook(delay=...)" in str(refused.value)


def test_the_loader_names_file_and_line_of_conflicting_playbook_options(tmp_path: Path) -> None:
    write(
        tmp_path,
        "from responder.playbook import on, playbook\n"
        "\n"
        "@playbook(coalesce=True)\n"
        "@on('incident.acknowledged')\n"
        "@playbook(coalesce=False)\n"
        "async def p(ctx): pass\n",
    )
    with pytest.raises(
        PlaybookLoadError, match=r"authored\.py: line 3: p: coalesce= is given twice"
    ):
        load_playbooks(tmp_path)


def test_a_playbook_needs_a_trigger_or_manual(tmp_path: Path) -> None:
    write(
        tmp_path, "from responder.playbook import playbook\n@playbook()\nasync def p(ctx): pass\n"
    )
    with pytest.raises(PlaybookLoadError, match=r"'p': has no triggers \(add @on"):
        load_playbooks(tmp_path)
    write(tmp_path, "from responder.playbook import manual\n@manual\nasync def p(ctx): pass\n")
    [loaded] = load_playbooks(tmp_path)
    assert (loaded.manual, loaded.triggers) == (True, [])


@pytest.mark.parametrize("order", ["manual above", "manual below"])
def test_manual_and_a_trigger_exclude_each_other(order: str) -> None:
    with pytest.raises(PlaybookError, match="noop: @manual and @on exclude each other"):
        if order == "manual above":
            manual(on("incident.triggered")(noop))
        else:
            on("incident.triggered")(manual(noop))


def test_a_manual_playbook_matches_no_event() -> None:
    by_hand = manual(noop)
    for event_type in ("incident.triggered", "incident.annotated", "manual.noop"):
        parsed = pagerduty.parse(pd_event(event_type))
        assert match([by_hand], parsed) == []


async def test_a_manual_playbook_runs_by_hand_and_is_listed_as_manual(
    make_client: MakeClient,
) -> None:
    ran: list[str] = []

    @playbook(params=("request",))
    @manual
    async def by_hand(ctx: Context) -> None:
        """Runs only when asked."""
        ran.append(ctx.params["request"])

    @on("incident.triggered")
    async def automatic(ctx: Context) -> None:
        """Runs for events."""
        ran.append("automatic")

    client = await make_client([by_hand, automatic])
    assert (await client.deliver(pd_event("incident.triggered"), "t1")).status == 202
    await client.wait_for_jobs()
    assert ran == ["automatic"]  # the event fired only the triggered playbook
    answer = await client.http.post(
        "/playbooks/by_hand/run?wait=30", json={"params": {"request": "now"}}, headers=AUTH
    )
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["status"] == "succeeded"
    assert ran == ["automatic", "now"]
    listed = {
        p["name"]: p for p in (await (await client.http.get("/playbooks")).json())["playbooks"]
    }
    assert (listed["by_hand"]["manual"], listed["by_hand"]["triggers"]) == (True, [])
    assert listed["automatic"]["manual"] is False


def test_the_builtin_playbooks_have_one_import_and_no_payload_fields() -> None:
    for path in sorted((REPO / "playbooks").glob("*.py")):
        source = path.read_text()
        imports = [line for line in source.splitlines() if re.match(r"(from|import) ", line)]
        assert imports == [imports[0]] and imports[0].startswith("from responder.playbook import")
        assert "event.data" not in source and ".data.get" not in source, path.name
        assert len(source.splitlines()) <= 50, path.name  # one screen: an example to read whole
    loaded = {p.name: p for p in load_playbooks(REPO / "playbooks")}
    assert loaded["host_diagnostics"].manual and not loaded["host_diagnostics"].triggers


def readme_example() -> str:
    """The first Python block of the README's "Writing a playbook" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Writing a playbook", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "no ```python block under '## Writing a playbook'"
    return found.group(1)


async def test_the_readme_example_runs_through_the_daemon(
    make_client: MakeClient, fake_ops: FakeOperations, tmp_path: Path
) -> None:
    (tmp_path / "checkout.py").write_text(readme_example())
    loaded = load_playbooks(tmp_path)
    assert [p.name for p in loaded] == ["checkout_diagnostics", "checkout_cleanup", "probe_now"]
    clock = FakeClock()
    client = await make_client(loaded, clock=clock)
    stack = "burner/incident-QREADME1"

    # The fixture's incident is a high-urgency one on "checkout-api (prod)".
    await client.deliver(pd_event("incident.triggered", "QREADME1"), "readme-1")
    [job] = await client.wait_for_jobs()
    assert (job.playbook, job.status) == ("checkout_diagnostics", JobStatus.SUCCEEDED), job.error
    config = fake_ops.stacks[stack].config
    assert config["target_url"] == "https://checkout.internal/health"
    assert config["incident_id"] == "QREADME1"
    assert json.loads(str(config["incident"]))["service"] == "checkout-api (prod)"

    await client.deliver(pd_event("incident.resolved", "QREADME1"), "readme-2")
    jobs = await client.wait_for_jobs(settled=(JobStatus.SCHEDULED,))
    assert jobs[-1].status == JobStatus.SCHEDULED  # ten minutes of grace
    clock.advance(601)
    client.daemon.runner.notify()
    jobs = await client.wait_for_jobs()
    assert (jobs[-1].playbook, jobs[-1].status) == ("checkout_cleanup", JobStatus.SUCCEEDED)
    assert stack not in fake_ops.stacks

    answer = await client.http.post(
        "/playbooks/probe_now/run?wait=30",
        json={"incident_id": "QREADME1", "params": {"target_url": "http://probe.test/"}},
        headers=AUTH,
    )
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["status"] == "succeeded"
    # The stack was gone: refresh raised StackNotFoundError, so the example provisioned it anew.
    assert fake_ops.ops("incident-QREADME1")[-3:] == ["destroy", "refresh", "up"]
    assert fake_ops.stacks[stack].config["target_url"] == "http://probe.test/"
