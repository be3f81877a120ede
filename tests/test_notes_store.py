"""The store contract for notes, on SQLite and PostgreSQL: queued with the job's result in one
transaction, claimed by one sender at a time, settled only under the claim, resumed after a crash."""

import asyncio

from responder.store import JobStatus, LeaseLost, NewNote, NoteStatus, Store
from tests.test_store_contract import NOW, Harness, enqueue, harness, job, next_claim, store

__all__ = ["harness", "store"]  # the contract's fixtures, used here

LEASE = 60.0


def notes(*keys: str) -> list[NewNote]:
    return [NewNote("pagerduty", "QINC", f'{{"note": {{"content": "{k}"}}}}', k) for k in keys]


async def finished_with_notes(store: Store, *keys: str, incident: str = "QINC") -> int:
    (job_id,) = await enqueue(store, job(incident), incident=incident)
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == job_id
    await store.finish(job_id, JobStatus.SUCCEEDED, NOW, fence=claimed.fence, notes=notes(*keys))
    return job_id


async def test_notes_are_queued_with_the_result_and_read_back_in_order(store: Store) -> None:
    job_id = await finished_with_notes(store, "k1", "k2")
    queued = await store.job_notes(job_id)
    assert [(n.key, n.status, n.attempts, n.job_id) for n in queued] == [
        ("k1", NoteStatus.PENDING, 0, job_id),
        ("k2", NoteStatus.PENDING, 0, job_id),
    ]
    assert queued[0].body == '{"note": {"content": "k1"}}' and queued[0].target == "QINC"
    assert queued[0].created_at == NOW and await store.next_note_due() == NOW


async def test_notes_and_the_next_claim_share_the_results_transaction(store: Store) -> None:
    first, behind = await enqueue(store, job("a"), job("a"))
    claimed = await store.claim_next(NOW)
    assert claimed is not None and claimed.id == first
    after = await store.finish(
        first,
        JobStatus.SUCCEEDED,
        NOW,
        fence=claimed.fence,
        notes=notes("n"),
        then_claim=next_claim(NOW),
    )
    assert after is not None and after.id == behind and after.status == JobStatus.RUNNING
    assert [n.key for n in await store.job_notes(first)] == ["n"]


async def test_a_result_sent_again_queues_its_notes_once(store: Store) -> None:
    """A retry of a result whose answer was lost is taken as written: its notes are not doubled."""
    (job_id,) = await enqueue(store, job())
    claimed = await store.claim_next(NOW)
    assert claimed is not None
    for _ in range(2):
        await store.finish(job_id, JobStatus.SUCCEEDED, NOW, fence=claimed.fence, notes=notes("k"))
    assert [n.key for n in await store.job_notes(job_id)] == ["k"]


async def test_a_result_refused_under_a_lost_lease_queues_no_notes(store: Store) -> None:
    (job_id,) = await enqueue(store, job())
    claimed = await store.claim_next(NOW)
    assert claimed is not None
    try:
        await store.finish(
            job_id, JobStatus.SUCCEEDED, NOW, fence=claimed.fence + 1, notes=notes("lost")
        )
    except LeaseLost:
        pass
    else:
        raise AssertionError("a stale fence was accepted")
    assert await store.job_notes(job_id) == []
    assert await store.claim_notes(NOW, 10, LEASE) == []


async def test_a_claim_leases_each_note_once_and_settles_only_under_it(store: Store) -> None:
    job_id = await finished_with_notes(store, "a", "b", "c")
    first = await store.claim_notes(NOW, 2, LEASE)
    assert [(n.key, n.status, n.attempts, n.resumed) for n in first] == [
        ("a", NoteStatus.SENDING, 1, False),
        ("b", NoteStatus.SENDING, 1, False),
    ]
    [third] = await store.claim_notes(NOW, 10, LEASE)
    assert third.key == "c"
    assert await store.claim_notes(NOW, 10, LEASE) == []  # all leased to this node
    assert await store.next_note_due() == NOW + LEASE

    a, b = first
    assert await store.settle_note(a.id, a.attempts, NoteStatus.SENT, NOW + 1)
    assert not await store.settle_note(a.id, a.attempts, NoteStatus.FAILED, NOW + 2)  # settled
    assert not await store.settle_note(
        b.id, b.attempts + 1, NoteStatus.SENT, NOW + 1
    )  # not its claim
    assert await store.settle_note(
        b.id, b.attempts, NoteStatus.PENDING, NOW + 1, error="HTTP 429", not_before=NOW + 5
    )
    assert await store.settle_note(third.id, 1, NoteStatus.FAILED, NOW + 1, error="HTTP 400")
    assert await store.next_note_due() == NOW + 5
    assert await store.claim_notes(NOW + 4, 10, LEASE) == []
    [again] = await store.claim_notes(NOW + 5, 10, LEASE)
    assert (again.key, again.attempts, again.last_error, again.resumed) == (
        "b",
        2,
        "HTTP 429",
        False,
    )

    by_key = {n.key: n for n in await store.job_notes(job_id)}
    assert (by_key["a"].status, by_key["a"].sent_at) == (NoteStatus.SENT, NOW + 1)
    assert (by_key["c"].status, by_key["c"].last_error) == (NoteStatus.FAILED, "HTTP 400")


async def test_a_note_whose_sender_died_is_resumed(harness: Harness) -> None:
    """A note left `sending` (its node died between sending and recording) is claimed again, marked
    `resumed`: by another node once the lease expired, and with SQLite by the next process at once."""
    await finished_with_notes(harness.store, "crashed")
    [claimed] = await harness.store.claim_notes(NOW, 10, LEASE)
    store = await harness.reopen()  # the same data, a new node
    if harness.one_process:
        [resumed] = await store.claim_notes(NOW + 1, 10, LEASE)
    else:
        assert await store.claim_notes(NOW + 1, 10, LEASE) == []  # its lease still holds
        [resumed] = await store.claim_notes(NOW + LEASE + 1, 10, LEASE)
    assert (resumed.id, resumed.attempts, resumed.resumed) == (claimed.id, 2, True)
    # The dead node's claim can no longer settle it.
    assert not await store.settle_note(claimed.id, claimed.attempts, NoteStatus.SENT, NOW + 2)
    assert await store.settle_note(resumed.id, resumed.attempts, NoteStatus.SENT, NOW + 2)


async def test_concurrent_claimers_never_share_a_note(harness: Harness) -> None:
    """Nodes claiming at once (PostgreSQL: SKIP LOCKED) each get their own notes."""
    if harness.one_process:
        stores = [harness.store]  # one process per SQLite file: its claims are serialised anyway
    else:
        other = await harness.another()
        await other.open()
        stores = [harness.store, other]
    try:
        for i in range(5):
            await finished_with_notes(
                harness.store, *(f"n{i}-{k}" for k in range(8)), incident=f"Q{i}"
            )
        claims = await asyncio.gather(
            *(s.claim_notes(NOW, 7, LEASE) for s in stores for _ in range(3))
        )
        ids = [n.id for claim in claims for n in claim]
        assert len(ids) == len(set(ids)) == min(40, 7 * 3 * len(stores))
    finally:
        for s in stores[1:]:
            await s.close()


async def test_a_notes_error_text_is_stored_made_storable(store: Store) -> None:
    """A reply's body quoted in the error may hold a NUL or a lone surrogate: the note is still
    settled (left `sending`, it would be claimed and sent again after its lease)."""
    await finished_with_notes(store, "k")
    [claimed] = await store.claim_notes(NOW, 10, LEASE)
    error = "HTTP 400: a\0b\udcffc"
    assert await store.settle_note(
        claimed.id, claimed.attempts, NoteStatus.FAILED, NOW, error=error
    )
    [settled] = await store.job_notes(claimed.job_id)
    assert settled.status == NoteStatus.FAILED
    assert settled.last_error == "HTTP 400: a\ufffdb\ufffdc"


async def test_the_retention_prune_keeps_a_job_whose_note_is_still_to_send(store: Store) -> None:
    """A retention shorter than the give-up time (or a service down past it): the note, pending,
    would be deleted with its job, never sent and never shown failed."""
    job_id = await finished_with_notes(store, "k1")
    assert (await store.prune(NOW + 10))["notes"] == 0
    assert [n.status for n in await store.job_notes(job_id)] == [NoteStatus.PENDING]
    [claimed] = await store.claim_notes(NOW + 10, 10, 60.0)  # sending: kept too
    assert (await store.prune(NOW + 10))["jobs"] == 0
    assert await store.settle_note(claimed.id, claimed.attempts, NoteStatus.SENT, NOW + 11)
    pruned = await store.prune(NOW + 20)  # sent: the job goes, and its notes with it
    assert (pruned["notes"], pruned["jobs"]) == (1, 1)
    assert await store.get_job(job_id) is None and await store.job_notes(job_id) == []
