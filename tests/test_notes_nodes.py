"""Two nodes delivering notes from one PostgreSQL store at once: each note reaches PagerDuty once."""

import asyncio
import uuid

import aiohttp
from pytest_aiohttp import AiohttpServer

from responder.notes import NoteDelivery, PagerDutySender
from responder.notes.note import make_note
from responder.notes.render import Subject, pagerduty_body
from responder.store import JobStatus, NewNote, NoteStatus
from responder.store.postgres import PostgresStore
from tests.notes_servers import PD_FROM, PD_TOKEN, Scripted, start_pagerduty
from tests.test_store_contract import NOW, enqueue, job

NOTES = 30


async def test_two_nodes_send_each_note_once(
    postgres_url: str, aiohttp_server: AiohttpServer
) -> None:
    pagerduty = await start_pagerduty(aiohttp_server)
    pagerduty.script = [Scripted(503, delay=0.05) for _ in range(5)]  # some retried, by either node
    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    for store in stores:
        await store.open()
    subject = Subject("QNOTE2", "t", "", "pb", "succeeded", 1, "")
    queued = []
    for _ in range(NOTES):
        key = uuid.uuid4().hex
        body = pagerduty_body(make_note(f"note {key}"), subject, key)
        queued.append(NewNote("pagerduty", "QNOTE2", body, key))
    (job_id,) = await enqueue(stores[0], job("s1"), incident="QNOTE2")
    claimed = await stores[0].claim_next(NOW)
    assert claimed is not None
    await stores[0].finish(job_id, JobStatus.SUCCEEDED, NOW, fence=claimed.fence, notes=queued)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            sender = PagerDutySender(session, pagerduty.url, PD_TOKEN, PD_FROM)
            nodes = [
                NoteDelivery(
                    s, {"pagerduty": sender}, give_up=60, mask=str, clock=lambda: NOW, backoff=0
                )
                for s in stores
            ]
            for _ in range(20):
                if not sum(await asyncio.gather(*(n.run_once() for n in nodes))):
                    break
        notes = await stores[0].job_notes(job_id)
        assert {n.status for n in notes} == {NoteStatus.SENT}
        contents = pagerduty.contents("QNOTE2")
        assert len(contents) == len(set(contents)) == NOTES  # every note, none twice
        assert len(pagerduty.posts(201)) == NOTES and pagerduty.problems == []
    finally:
        for store in stores:
            await store.close()
