"""The note delivery loop: claims due notes from the store, sends them, records how each attempt ended."""

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from responder import metrics
from responder.logs import get_logger
from responder.notes.senders import Refused, Retry, Sender
from responder.store import NoteRecord, NoteStatus, Store

log = get_logger("responder.notes")

BATCH = 10  # notes claimed (and sent concurrently) at a time
IDLE_POLL = 5.0  # seconds between looks at the store when nothing is due: other nodes' notes


class NoteDelivery:
    """Delivers the notes jobs queued, on every node. A claim leases a note to this node (`lease`
    seconds, longer than an attempt's `timeout`), so no two nodes send it at once; an attempt that
    fails with `Retry` is tried again with exponential backoff (`backoff` × 2ⁿ, at most
    `max_backoff`, or the service's `Retry-After`) until `give_up` seconds after the note was
    queued, then marked failed. A note claimed again after its sender died (`resumed`), or tried
    again after an attempt whose fate is unknown, is first looked for at the service when the
    service can be asked (PagerDuty), so it is not posted twice.

    Nothing here touches a job: a note that fails is recorded on the note, and logged.
    """

    def __init__(
        self,
        store: Store,
        senders: Mapping[str, Sender],
        *,
        give_up: float,
        mask: Callable[[str], str],
        clock: Callable[[], float] = time.time,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        lease: float = 60.0,
    ) -> None:
        self.store = store
        self.senders = senders
        self.give_up = give_up
        self.mask = mask  # error text may quote a URL that carries a credential
        self.clock = clock
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.lease = lease
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="note-delivery")

    async def stop(self) -> None:
        """Stop at once; a note being sent stays `sending` and is taken up again after its lease."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def notify(self) -> None:
        """Notes were queued: look now."""
        self._wakeup.set()

    async def run_once(self) -> int:
        """Claim the due notes and attempt each once; returns how many were attempted."""
        claimed = await self.store.claim_notes(self.clock(), BATCH, self.lease)
        results = await asyncio.gather(
            *(self._attempt(note) for note in claimed), return_exceptions=True
        )
        for note, result in zip(claimed, results, strict=True):
            if isinstance(result, Exception):  # the store, most likely: the lease brings it back
                log.error("notes.attempt_error", note_id=note.id, exc_info=result)
        return len(claimed)

    async def _loop(self) -> None:
        """Nothing but cancellation ends it: a failure is logged and the loop goes on."""
        while True:
            try:
                self._wakeup.clear()
                if await self.run_once() == BATCH:
                    continue  # more may be due
                due = await self.store.next_note_due()
                wait = IDLE_POLL if due is None else min(IDLE_POLL, max(0.05, due - self.clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notes.loop_error")
                await asyncio.sleep(IDLE_POLL)

    async def _attempt(self, note: NoteRecord) -> None:
        where = {"note_id": note.id, "job_id": note.job_id, "destination": note.destination}
        sender = self.senders.get(note.destination)
        if sender is None:
            await self._settle(
                note, NoteStatus.FAILED, f"{note.destination} is not configured", where
            )
            return
        age = self.clock() - note.created_at
        if age > self.give_up:  # queued while the daemon was down, or claimed again that late
            tried = note.attempts - 1  # this claim's attempt is not made
            error = (
                f"given up after {tried} attempts in {age:.0f}s: {note.last_error or 'not sent'}"
            )
            await self._settle(note, NoteStatus.FAILED, error, where)
            return
        try:
            # Any earlier attempt may have been taken with its answer lost (a crash, a timeout):
            # where the service can be asked, ask before posting again.
            there = (note.resumed or note.attempts > 1) and await sender.already_sent(note)
            if there:
                log.info("notes.already_there", **where, attempt=note.attempts)
            else:
                await sender.send(note)
        except Refused as e:
            await self._settle(note, NoteStatus.FAILED, self.mask(str(e)), where)
            return
        except Retry as e:
            await self._retry(note, e, where)
            return
        except Exception as e:  # a bug or a surprise: retried like any failure, so it is given up
            log.exception("notes.attempt_error", **where, attempt=note.attempts)
            await self._retry(note, Retry(f"{type(e).__name__}: {e}"), where)
            return
        await self._settle(note, NoteStatus.SENT, None, where)

    async def _retry(self, note: NoteRecord, e: Retry, where: dict[str, object]) -> None:
        error = self.mask(str(e))
        if e.after is None:
            # The exponent capped: 2 ** 1024 overflows a float (a give-up of days with a service
            # down), which stranded the note `sending`, posted again at every claim.
            delay = min(self.backoff * 2.0 ** min(note.attempts - 1, 64), self.max_backoff)
        else:  # the service's wait, but never less than ours: `Retry-After: 0` is no reason to spin
            delay = max(e.after, self.backoff)
        now = self.clock()
        if now + delay > note.created_at + self.give_up:
            given_up = (
                f"given up after {note.attempts} attempts in {now - note.created_at:.0f}s: {error}"
            )
            await self._settle(note, NoteStatus.FAILED, given_up, where)
            return
        metrics.note_attempt(note.destination, "retrying")
        log.warning(
            "notes.retrying", **where, attempt=note.attempts, error=error, delay_seconds=delay
        )
        held = await self.store.settle_note(
            note.id, note.attempts, NoteStatus.PENDING, now, error=error, not_before=now + delay
        )
        if not held:
            log.warning("notes.claim_lost", **where, attempt=note.attempts)

    async def _settle(
        self, note: NoteRecord, status: NoteStatus, error: str | None, where: dict[str, object]
    ) -> None:
        held = await self.store.settle_note(
            note.id, note.attempts, status, self.clock(), error=error
        )
        if not held:
            log.warning("notes.claim_lost", **where, attempt=note.attempts)
            return
        metrics.note_attempt(note.destination, status.value)
        if status == NoteStatus.SENT:
            log.info("notes.sent", **where, attempt=note.attempts)
        else:
            log.error("notes.failed", **where, attempt=note.attempts, error=error)
