"""The notes service as the daemon runs it: senders for the configured destinations, the loop."""

import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable

import aiohttp

from responder.config import Settings
from responder.logs import Redactor, get_logger
from responder.notes.delivery import NoteDelivery
from responder.notes.planner import PAGERDUTY, SLACK, NotePlanner
from responder.notes.senders import PagerDutySender, Sender, SlackSender
from responder.store import Store

log = get_logger("responder.notes")

# One attempt's limits: a slow service is a failed attempt (retried), not a stuck loop.
ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """What the redactor must mask: the API token, and the webhook URL with the credential in its
    path (whole, and each long path segment, as an error may quote either)."""
    url = settings.slack_webhook_url
    segments = [s for s in urllib.parse.urlsplit(url).path.split("/") if len(s) >= 16]
    return tuple(v for v in (settings.pagerduty_api_token, url, *segments) if v)


@contextlib.asynccontextmanager
async def running_notes(
    settings: Settings,
    store: Store,
    redactor: Redactor,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[NotePlanner]:
    """The planner the runner queues notes with, and (when a destination is configured) the
    delivery loop sending them, until the context exits."""
    redactor.add(*secrets_of(settings))

    def mask(text: str) -> str:
        return str(redactor.redact(text))

    pagerduty = bool(settings.pagerduty_api_token)
    slack = bool(settings.slack_webhook_url)
    planner = NotePlanner(
        pagerduty=pagerduty, slack=slack, public_url=settings.public_url, mask=mask
    )
    if not planner.enabled:
        log.info("notes.disabled", reason="no PagerDuty API token and no chat webhook configured")
        yield planner
        return
    async with aiohttp.ClientSession(timeout=ATTEMPT_TIMEOUT) as session:
        senders: dict[str, Sender] = {}
        if pagerduty:
            senders[PAGERDUTY] = PagerDutySender(
                session,
                settings.pagerduty_api_url,
                settings.pagerduty_api_token,
                settings.pagerduty_from,
            )
        if slack:
            senders[SLACK] = SlackSender(session, settings.slack_webhook_url)
        delivery = NoteDelivery(
            store, senders, give_up=settings.note_give_up, mask=mask, clock=clock
        )
        planner.queued = delivery.notify
        delivery.start()
        log.info(
            "notes.enabled", destinations=sorted(senders), give_up_seconds=settings.note_give_up
        )
        try:
            yield planner
        finally:
            await delivery.stop()
