"""Notes under attack and under strain: redirects not followed, endless or hostile answers, incident
ids that would leave their path, chat injection from incident titles, secrets split by a cut,
notes in a loop, a sender that breaks, a service asking to retry at once, header-breaking settings."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from responder.config import ConfigError, Settings
from responder.notes import NoteDelivery, NotePlanner, PagerDutySender, Sender, SlackSender
from responder.notes.note import MAX_NOTES, MAX_VALUE, make_note
from responder.notes.render import Subject, key_line, slack_body
from responder.notes.senders import Refused, Retry
from responder.playbook import Context, on
from responder.store import Job, JobStatus, NewNote, NoteRecord, NoteStatus
from responder.store.sqlite import SQLiteStore
from tests.helpers import Client, LogCapture, bare_event, pd_event
from tests.notes_servers import PD_FROM, PD_TOKEN, start_slack
from tests.test_store_contract import NOW, enqueue, job

SECRET = "s3cr3t-value-0123456789-abcdefghijklmnop"  # 40 characters


def record(
    target: str = "QNOTE1", key: str = "k" * 32, destination: str = "pagerduty"
) -> NoteRecord:
    body = json.dumps({"note": {"content": f"hello\n{key_line(key)}"}})
    return NoteRecord(1, 1, destination, target, body, key, NoteStatus.SENDING, 1, NOW, NOW)


class Recorder:
    """Any path, any method: records what arrived, answers with `handler`."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.url = ""

    async def start(
        self,
        aiohttp_server: AiohttpServer,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
    ) -> "Recorder":
        async def handle(request: web.Request) -> web.StreamResponse:
            self.seen.append(f"{request.method} {request.raw_path}")
            if handler is None:
                return web.Response(status=201, text="{}")
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        self.url = str(server.make_url("")).rstrip("/")
        return self


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as made:
        yield made


# -- the HTTP side ------------------------------------------------------------------------------


async def test_a_redirect_is_not_followed_with_the_token_or_the_note(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    elsewhere = await Recorder().start(aiohttp_server)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(f"{elsewhere.url}/collect")

    service = await Recorder().start(aiohttp_server, redirect)
    pagerduty = PagerDutySender(session, service.url, PD_TOKEN, PD_FROM)
    senders: list[Sender] = [
        pagerduty,
        SlackSender(session, f"{service.url}/services/T0/B0/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ]
    for sender in senders:
        with pytest.raises(Refused, match="HTTP 307"):
            await sender.send(record())
    assert await asyncio.wait_for(_refused(pagerduty.already_sent(record())), 5)
    assert len(service.seen) == 3 and elsewhere.seen == []


async def _refused(call: Awaitable[bool]) -> bool:
    try:
        await call
    except Refused:
        return True
    return False


async def test_an_endless_error_answer_is_cut_not_read_to_the_end(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=503)
        await response.prepare(request)
        while True:
            await response.write(b"x" * 4096)
            await asyncio.sleep(0.01)

    service = await Recorder().start(aiohttp_server, endless)
    sender = PagerDutySender(session, service.url, PD_TOKEN, PD_FROM)
    started = time.monotonic()
    with pytest.raises(Retry) as raised:
        await sender.send(record())
    assert time.monotonic() - started < 2  # not the session's 5 s timeout
    assert str(raised.value) == "HTTP 503: " + "x" * 200


@pytest.mark.parametrize("incident", ["..", ".", "Q1/../../users", "Q1?x=1", "", "Q1 2"])
async def test_an_incident_id_that_is_not_a_pagerduty_id_makes_no_request(
    incident: str, aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    service = await Recorder().start(aiohttp_server)
    sender = PagerDutySender(session, f"{service.url}/api", PD_TOKEN, PD_FROM)
    with pytest.raises(Refused, match="is not a PagerDuty incident id"):
        await sender.send(record(incident))
    with pytest.raises(Refused):
        await sender.already_sent(record(incident))
    assert service.seen == []


async def test_the_key_is_found_in_a_long_listing_that_arrives_in_pieces(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    key = "0123456789abcdef" * 2
    notes = [{"id": f"P{i}", "content": "filler " * 300} for i in range(300)]
    notes.append({"id": "PLAST", "content": f"the note\n{key_line(key)}"})
    listing = json.dumps({"notes": notes}).encode()

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for start in range(0, len(listing), 7):  # the key line spans pieces
            await response.write(listing[start : start + 7])
        await response.write_eof()
        return response

    service = await Recorder().start(aiohttp_server, trickle)
    sender = PagerDutySender(session, service.url, PD_TOKEN, PD_FROM)
    assert await sender.already_sent(record(key=key))
    assert not await sender.already_sent(record(key="f" * 32))


# -- what goes into a note ----------------------------------------------------------------------


def test_a_secret_split_by_the_cut_is_still_masked() -> None:
    planner = NotePlanner(
        pagerduty=False, slack=True, public_url="", mask=lambda t: t.replace(SECRET, "[secret]")
    )
    before_cut = MAX_VALUE - 20  # the secret straddles the value's limit
    note = make_note("x" * 2890 + SECRET, fields={"output": "y" * before_cut + SECRET})
    [planned] = planner.plan(_job(), JobStatus.SUCCEEDED, [note])
    assert SECRET[:12] not in planned.body


def test_incident_titles_and_urls_cannot_ping_or_link_in_chat() -> None:
    title = "<!channel> @here deploy <https://evil.example|Job 1> @all"
    subject = Subject(
        incident_id="Q1",
        incident_title=title,
        incident_url="https://acme.pagerduty.com/incidents/Q1|x> <!channel> <https://evil.example",
        playbook="pb",
        outcome="succeeded",
        job_id=7,
        job_url="",
    )
    message = json.loads(slack_body(make_note("probe <!here> @channel"), subject))
    header, *parsed = message["blocks"]  # the header is plain_text: Slack parses nothing in it
    assert header["text"] == {"type": "plain_text", "text": title}
    everything = json.dumps({"text": message["text"], "blocks": parsed}, ensure_ascii=False)
    assert "<!" not in everything and "<https://evil" not in everything
    assert "@here" not in everything and "@channel" not in everything and "@all" not in everything
    assert message["text"].startswith("&lt;!channel&gt; @\u2060here deploy")
    assert message["blocks"][-1]["elements"][0]["text"] == "Job 7 · Incident Q1"


def test_markdown_links_and_images_in_incident_text_link_nothing_in_chat() -> None:
    """Mattermost and Rocket.Chat render the message's text as Markdown."""
    title = "[Job 7 page](https://evil.example) ![](https://evil.example/pixel.png) [ref]"
    subject = Subject("Q1", title, "", "pb", "failed", 7, "")
    note = make_note("[docs][ref]\n[ref]: https://evil.example", fields={"[a](b)": "c"})
    text = json.loads(slack_body(note, subject))["text"]
    assert "](" not in text and "\n[ref]:" not in text
    assert text.replace("\u2060", "").startswith(title)  # shown as written


def test_mentions_and_ipv6_links_in_chat() -> None:
    """Mattermost strips `_`, `.`, `-`, `:` from a mention's end, so `@channel_` pings everyone;
    an IPv6 address's `]:` before its port is no Markdown, and a job link with one stays whole."""
    subject = Subject("Q1", "@channel_ db down, @here. @all- @channels", "", "pb", "ok", 7, "")
    subject = replace(subject, job_url="http://[fd00::5]:8080/ui/jobs/7")
    note = make_note("see http://[fd00::7]:9090/metrics")
    text = json.loads(slack_body(note, subject))["text"]
    assert "@\u2060channel_ db down, @\u2060here. @\u2060all- @channels" in text
    assert "http://[fd00::5]:8080/ui/jobs/7" in text and "http://[fd00::7]:9090/metrics" in text


def _job() -> Job:
    return Job(
        id=7,
        delivery_id="d-1",
        playbook="pb",
        project="proj",
        stack="s1",
        event=bare_event(),
        incident_id="Q1",
        event_type="incident.triggered",
        status=JobStatus.RUNNING,
        attempts=1,
        max_attempts=3,
        not_before=NOW,
        created_at=NOW,
        started_at=NOW,
        finished_at=None,
        error=None,
        outputs=None,
        params={},
    )


@on("incident.triggered")
async def chatty(ctx: Context) -> None:
    """Notes in a loop."""
    for i in range(MAX_NOTES * 5):
        await ctx.note(f"note {i}")


async def test_a_job_writes_at_most_max_notes(
    make_client: Callable[..., Awaitable[Client]], aiohttp_server: AiohttpServer
) -> None:
    slack = await start_slack(aiohttp_server)
    client = await make_client([chatty], slack_webhook_url=slack.url)
    assert (await client.deliver(pd_event("incident.triggered", "QNOTES"))).status == 202
    [done] = await client.wait_for_jobs(timeout=30)
    assert done.status == JobStatus.SUCCEEDED
    notes = await client.daemon.store.job_notes(done.id)
    assert len(notes) == MAX_NOTES


# -- the delivery loop --------------------------------------------------------------------------


class Breaking:
    """A sender that fails every attempt with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def send(self, note: NoteRecord) -> None:
        raise self.error

    async def already_sent(self, note: NoteRecord) -> bool:
        raise self.error


async def queued_note(tmp_path: Path) -> tuple[SQLiteStore, int]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    (job_id,) = await enqueue(store, job())
    claimed = await store.claim_next(NOW)
    assert claimed is not None
    note = NewNote("slack", "", "{}", "key-1")
    await store.finish(job_id, JobStatus.SUCCEEDED, NOW, fence=claimed.fence, notes=[note])
    return store, job_id


async def test_a_sender_that_breaks_is_retried_then_given_up(tmp_path: Path) -> None:
    store, job_id = await queued_note(tmp_path)
    now = [NOW]
    delivery = NoteDelivery(
        store,
        {"slack": Breaking(RuntimeError(f"bug quoting {SECRET}"))},
        give_up=30,
        mask=lambda t: t.replace(SECRET, "[secret]"),
        clock=lambda: now[0],
        backoff=1.0,
    )
    try:
        assert await delivery.run_once() == 1
        [note] = await store.job_notes(job_id)
        assert note.status == NoteStatus.PENDING and note.not_before == NOW + 1.0
        assert note.last_error == "RuntimeError: bug quoting [secret]"
        now[0] += 29  # tried again within the give-up time; the next wait would pass it
        assert await delivery.run_once() == 1
        [note] = await store.job_notes(job_id)
        assert note.status == NoteStatus.FAILED and note.last_error is not None
        assert note.last_error.startswith("given up after 2 attempts")
    finally:
        await store.close()


async def test_retry_after_zero_waits_the_backoff_instead_of_spinning(tmp_path: Path) -> None:
    store, job_id = await queued_note(tmp_path)
    delivery = NoteDelivery(
        store,
        {"slack": Breaking(Retry("HTTP 429", after=0.0))},
        give_up=600,
        mask=str,
        clock=lambda: NOW,
        backoff=2.0,
    )
    try:
        assert await delivery.run_once() == 1
        [note] = await store.job_notes(job_id)
        assert note.status == NoteStatus.PENDING and note.not_before == NOW + 2.0
        assert await delivery.run_once() == 0  # not due again at once
    finally:
        await store.close()


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RESPONDER_PAGERDUTY_API_TOKEN", "y_NbAkKc66ry\r\nX-Injected: 1"),
        ("RESPONDER_PAGERDUTY_API_TOKEN", "y_NbAkKc66ry YTWUXYEu"),
        ("RESPONDER_PAGERDUTY_FROM", "bot@example.com\x00x"),
    ],
)
def test_a_value_that_would_break_a_header_stops_start_up(name: str, value: str) -> None:
    env = {"RESPONDER_PAGERDUTY_API_TOKEN": PD_TOKEN, "RESPONDER_PAGERDUTY_FROM": PD_FROM}
    with pytest.raises(ConfigError) as raised:
        Settings.load({**env, name: value})
    assert str(raised.value).startswith(f"{name}: ") and "y_NbAkKc66ry" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://bot:p4ssw0rd-in-url@api.pagerduty.com",
        "https://api.pagerduty.com/?token=x",
        "https://api.pagerduty.com/#x",
    ],
)
@pytest.mark.parametrize("name", ["RESPONDER_PAGERDUTY_API_URL", "RESPONDER_PUBLIC_URL"])
def test_a_base_url_with_credentials_query_or_fragment_stops_start_up(name: str, url: str) -> None:
    """A password would be logged with the settings; a query or fragment would swallow the paths
    appended to the URL (`/incidents/...`, `/ui/jobs/...`)."""
    with pytest.raises(ConfigError) as raised:
        Settings.load({name: url})
    assert str(raised.value).startswith(f"{name}: ") and "p4ssw0rd" not in str(raised.value)


async def test_stop_during_a_send_is_prompt_and_the_note_is_taken_over(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    service = await Recorder().start(aiohttp_server, hang)
    store, job_id = await queued_note(tmp_path)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        sender = SlackSender(session, f"{service.url}/services/T0/B0/XXXXXXXXXXXXXXXXXXXXXXXX")
        delivery = NoteDelivery(
            store, {"slack": sender}, give_up=600, mask=str, clock=lambda: NOW + 1
        )
        delivery.start()
        await asyncio.wait_for(arrived.wait(), 10)
        started = time.monotonic()
        await delivery.stop()
        assert time.monotonic() - started < 1
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "note-delivery"]
    [note] = await store.job_notes(job_id)
    assert note.status == NoteStatus.SENDING
    await store.close()
    successor = SQLiteStore(tmp_path / "store.db")  # the next process: another node
    await successor.open()
    try:
        [taken] = await successor.claim_notes(NOW + 2, 10, 60)
        assert (taken.id, taken.attempts, taken.resumed) == (note.id, 2, True)
    finally:
        await successor.close()


async def test_a_listing_that_is_not_json_is_not_taken_for_no_note(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    """A proxy's page answering the GET says nothing about the incident's notes: posting on its
    word could post twice."""

    async def portal(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>Sign in</html>", content_type="text/html")

    service = await Recorder().start(aiohttp_server, portal)
    sender = PagerDutySender(session, service.url, PD_TOKEN, PD_FROM)
    with pytest.raises(Retry, match="text/html"):
        await sender.already_sent(record())


def annotated(incident: str, content: str) -> bytes:
    """PagerDuty's `incident.annotated`: a note added to the incident, ours or a person's."""
    document = json.loads(pd_event("incident.annotated", incident))
    reference = {"id": incident, "type": "incident_reference", "summary": "t", "html_url": ""}
    document["event"]["data"] = {
        "id": "PNOTE1",
        "type": "incident_note",
        "content": content,
        "trimmed": False,
        "incident": reference,
    }
    return json.dumps(document).encode()


async def test_pagerduty_telling_of_our_own_note_runs_no_playbook(
    make_client: Callable[..., Awaitable[Client]], logs: LogCapture
) -> None:
    """PagerDuty sends `incident.annotated` for every note, the ones responder writes too: a
    playbook on it that notes again (the built-in refresh, on a failure or a new probe result)
    would answer each of its own notes with another, without end."""

    @on("incident.annotated")
    async def answer(ctx: Context) -> None:
        """Would note again."""

    client = await make_client([answer])
    ours = f"Diagnostics stack incident-QECHO changed.\n\nPlaybook x, job 1: succeeded\n{key_line('ab' * 16)}"
    response = await client.deliver(annotated("QECHO", ours), "echo-1")
    assert response.status == 202 and (await response.json())["jobs"] == []
    [own] = logs.events("delivery.own_note")
    assert own["delivery_id"] == "echo-1"
    quoted = f"a person quoting it: {key_line('ab' * 16)}"  # not on a line of its own
    for n, content in enumerate(["Rolled back the deploy.", quoted]):
        response = await client.deliver(annotated("QECHO", content), f"person-{n}")
        assert len((await response.json())["jobs"]) == 1, content


class Counting:
    """A sender that fails every time, counting its sends."""

    def __init__(self, error: Exception) -> None:
        self.error, self.sent = error, 0

    async def send(self, note: NoteRecord) -> None:
        self.sent += 1
        raise self.error

    async def already_sent(self, note: NoteRecord) -> bool:
        return False


async def test_a_note_claimed_past_its_give_up_time_is_failed_not_sent(tmp_path: Path) -> None:
    """Queued while the daemon was down for three days: posting it now would announce stale news."""
    store, job_id = await queued_note(tmp_path)
    sender = Counting(Retry("HTTP 503"))
    delivery = NoteDelivery(
        store, {"slack": sender}, give_up=600, mask=str, clock=lambda: NOW + 3 * 86400
    )
    try:
        assert await delivery.run_once() == 1
        [note] = await store.job_notes(job_id)
        assert note.status == NoteStatus.FAILED and sender.sent == 0
        assert note.last_error == "given up after 0 attempts in 259200s: not sent"
    finally:
        await store.close()


async def test_a_note_failing_for_days_backs_off_to_the_max_and_is_given_up(
    tmp_path: Path,
) -> None:
    """Its attempts past 1024 overflowed the backoff's power of two: the note stayed `sending`,
    posted again at every claim, forever."""
    store, job_id = await queued_note(tmp_path)
    sender = Counting(Retry("HTTP 503"))
    now = [NOW]
    delivery = NoteDelivery(
        store,
        {"slack": sender},
        give_up=86400,
        mask=str,
        clock=lambda: now[0],
        backoff=1.0,
        max_backoff=60.0,
    )
    try:
        while (await store.job_notes(job_id))[0].status == NoteStatus.PENDING:
            assert sender.sent < 1500
            now[0] = (await store.job_notes(job_id))[0].not_before
            assert await delivery.run_once() == 1
        [note] = await store.job_notes(job_id)
        assert (
            note.status == NoteStatus.FAILED and 1024 < sender.sent < 1450
        )  # a day, a minute apart
        assert note.last_error is not None and note.last_error.startswith("given up after")
    finally:
        await store.close()
