"""Crash safety of notes: the daemon SIGKILLed after the service took a note but before the note was
recorded sent. After a restart PagerDuty gets no second note (its key is found on the incident);
a Slack webhook, which cannot be asked, gets the message again, as the README says."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.helpers import REPO, pd_event
from tests.notes_servers import FakeService, pagerduty_settings, start_pagerduty, start_slack
from tests.test_crash import DaemonProcess, free_port, post

INCIDENT = "QCRASHNOTE"


@pytest.fixture
def daemon(data_dir: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(data_dir, free_port(), tmp_path / "daemon.log")
    yield process
    process.terminate()


async def job_notes(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/jobs/1") as answer:
        notes: list[dict[str, Any]] = (await answer.json())["notes"]
        return notes


@pytest.mark.parametrize("destination", ["pagerduty", "slack"])
async def test_a_note_taken_just_before_a_crash(
    destination: str, daemon: DaemonProcess, aiohttp_server: AiohttpServer
) -> None:
    service: FakeService
    if destination == "pagerduty":
        pagerduty = await start_pagerduty(aiohttp_server)
        service = pagerduty
        sender = {
            f"RESPONDER_{k.upper()}": str(v) for k, v in pagerduty_settings(pagerduty).items()
        }
    else:
        slack = await start_slack(aiohttp_server)
        service = slack
        sender = {"RESPONDER_SLACK_WEBHOOK_URL": slack.url}
    daemon.settings = {  # the note-only playbook, one job at a time
        "RESPONDER_PLAYBOOKS_DIR": str(REPO / "tests" / "notes_playbooks"),
        "RESPONDER_WORKERS": "1",
        **sender,
    }
    taken = asyncio.Event()

    async def hold() -> None:  # the note is taken; its answer never leaves before the kill
        taken.set()
        await asyncio.Event().wait()

    service.on_post = hold
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        daemon.start()
        await daemon.wait_ready(session)
        body = pd_event("incident.triggered", INCIDENT)
        assert await post(session, daemon.url, body, "crash-note") == 202
        await asyncio.wait_for(taken.wait(), 30)
        daemon.kill()
        service.on_post = None
        assert [n["status"] for n in await _notes_on_disk(daemon)] == ["sending"]

        daemon.start()
        await daemon.wait_ready(session)
        deadline = asyncio.get_running_loop().time() + 30
        while (notes := await job_notes(session, daemon.url))[0]["status"] != "sent":
            assert asyncio.get_running_loop().time() < deadline, notes
            await asyncio.sleep(0.2)
    assert notes[0]["attempts"] == 2
    if destination == "pagerduty":
        assert len(pagerduty.contents(INCIDENT)) == 1
        assert [r.method for r in pagerduty.requests] == ["POST", "GET"]
        assert any(line["event"] == "notes.already_there" for line in daemon.log_lines())
    else:
        assert len(slack.messages) == 2  # the one duplicate the README documents
    assert service.problems == []


async def _notes_on_disk(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """The notes as the killed daemon left them in its store."""
    from responder.store.sqlite import SQLiteStore

    store = SQLiteStore(daemon.data_dir / "responder.db")
    await store.open()
    try:
        return [{"status": n.status.value} for n in await store.job_notes(1)]
    finally:
        await store.close()
